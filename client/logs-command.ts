/**
 * `falconet logs ID [-f]`: a task's output as it writes it, raw: its stdout chunks to stdout, its
 * stderr chunks to stderr, and falconet's own notes (bytes dropped, an attempt re-queued) to stderr
 * as `[falconet: …]` lines. Without `-f` it prints what there is now (a finished task: the output
 * its result keeps) and exits; with `-f` it waits for a queued task to start and follows it to its
 * end.
 *
 * Exit codes, as `watch` and `task`: 0 when the task succeeded, or when it has not ended and the
 * command was not asked to follow it; 1 when it ended otherwise (failed, timed out, cancelled,
 * lost) or the id is unknown (NOT_FOUND); 3 when the dispatcher cannot be reached or the
 * connection was lost while following.
 */
import { ErrorCode, FalconetError } from '../protocol/index.js';
import { dial, type Target } from './commands.js';

export async function logsCommand(target: Target, id: string, o: { follow: boolean; session?: string }): Promise<number> {
  const client = await dial(target);
  let stream;
  try {
    stream = client.logs(id, { follow: o.follow, ...(o.session ? { session: o.session } : {}) });
    // Ctrl-C while following: stop quietly, as `tail -f` does.
    const stop = () => stream!.stop();
    process.once('SIGINT', stop);
    try {
      for await (const piece of stream) {
        if (piece.stream === 'stdout') process.stdout.write(piece.data);
        else process.stderr.write(piece.data);
      }
    } finally {
      process.off('SIGINT', stop);
    }
  } finally {
    await client.close();
  }
  const end = await stream.ended;
  switch (end.status) {
    case 'succeeded':
    case 'queued':
    case 'running':
    case 'stopped':
      return 0;
    case 'disconnected':
      throw new FalconetError(ErrorCode.UNREACHABLE, `the connection to the dispatcher was lost while following task ${id}; falconet logs ${id} again shows its output`);
    default:
      process.stderr.write(`falconet: task ${id} ended ${end.status}\n`);
      return 1;
  }
}
