/**
 * CPU time per task of every process and thread of a bench run, from /proc (Linux): run it beside
 * a bench, it polls every process whose command line contains PATTERN (e.g. the dist directory
 * the bench runs from) until they have all exited, then prints user + system time per task.
 *
 *   node dist/bench/thread-cpu.js PATTERN TASKS &  node dist/bench/throughput.js --runs 1 --tasks TASKS ...
 *
 * Unlike a CPU profile's busy time (bench/profile.ts), this counts only time on a core: a thread
 * that waits for one (a loaded machine) or blocks in fsync (the store writer) is not charged.
 * The tick is 10 ms, so use runs of a few seconds at least. Threads are listed by CPU time; in a
 * dispatcher the first is the event loop and the second the store's writer thread (the rest are
 * V8's garbage-collection helpers and libuv's pool).
 */
import { readFileSync, readdirSync } from 'node:fs';

interface Proc {
  cmd: string;
  /** Ticks (1/100 s) per thread id, as last read. */
  ticks: Map<string, number>;
}

function roleOf(cmd: string): string {
  if (/\sdispatcher\s/.test(cmd)) return 'dispatcher';
  if (/\sexecutor\s/.test(cmd)) return 'executor';
  if (/load\.js/.test(cmd)) return 'client';
  return cmd.slice(0, 60);
}

function main(): void {
  const [pattern, tasksText] = process.argv.slice(2);
  const tasks = Number(tasksText);
  if (!pattern || !(tasks > 0)) {
    process.stderr.write('usage: node dist/bench/thread-cpu.js PATTERN TASKS\n');
    process.exit(2);
  }
  const seen = new Map<string, Proc>();
  const started = Date.now();
  const poll = (): void => {
    let alive = 0;
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid) || pid === String(process.pid)) continue;
      let cmd: string;
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      } catch {
        continue; // gone meanwhile
      }
      if (!cmd.includes(pattern) || cmd.includes('thread-cpu.js') || cmd.includes('/bench/throughput.js')) continue;
      alive++;
      let p = seen.get(pid);
      if (!p) seen.set(pid, (p = { cmd, ticks: new Map() }));
      try {
        for (const tid of readdirSync(`/proc/${pid}/task`)) {
          const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
          const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
          p.ticks.set(tid, Number(fields[11]) + Number(fields[12])); // utime + stime
        }
      } catch {} // exited between the two reads: its last figures stand
    }
    if (alive === 0 && seen.size > 0 && Date.now() - started > 2000) return report(seen, tasks);
    setTimeout(poll, 50);
  };
  poll();
}

function report(seen: Map<string, Proc>, tasks: number): void {
  const us = (ticks: number) => ((ticks * 10_000) / tasks).toFixed(1);
  let all = 0;
  for (const [pid, p] of seen) {
    const threads = [...p.ticks.values()].sort((a, b) => b - a);
    const total = threads.reduce((a, t) => a + t, 0);
    all += total;
    console.log(`${roleOf(p.cmd).padEnd(10)} pid ${pid}: ${us(total)} µs/task; threads ${threads.slice(0, 4).map(us).join(' / ')}`);
  }
  console.log(`all: ${us(all)} µs/task`);
}

main();
