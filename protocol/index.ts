/** The falconet wire protocol: messages, codec, validation and error codes. */
export * from './errors.js';
export * from './messages.js';
export * from './codec.js';
export * from './standard.js';
export * from './validate.js';
export * from './locality.js';
