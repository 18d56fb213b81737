#!/usr/bin/env node
// Writes docs/cli.md from the CLI's one registry of commands and flags (client/registry.ts, built
// to dist/). `npm run docs:cli`; test/cli-help.test.ts fails when docs/cli.md is out of date.
import { writeFileSync } from 'node:fs';
import { markdown } from '../dist/client/registry.js';

const out = new URL('../docs/cli.md', import.meta.url);
writeFileSync(out, markdown());
process.stdout.write(`wrote ${out.pathname}\n`);
