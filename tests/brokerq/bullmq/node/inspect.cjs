// What Node BullMQ (and so Bull Board) sees of a queue: job counts, failed jobs, and for the
// given ids each job's state and fields.
// usage: node inspect.cjs <redis-url> <queue> [job-id ...]
'use strict';
const { Queue } = require('bullmq');

const [url, queueName, ...ids] = process.argv.slice(2);

(async () => {
  const queue = new Queue(queueName, { connection: { url } });
  const counts = await queue.getJobCounts();
  const failed = (await queue.getFailed()).map((j) => ({
    id: j.id, name: j.name, data: j.data, failedReason: j.failedReason,
    attemptsMade: j.attemptsMade, finishedOn: j.finishedOn,
  }));
  const jobs = {};
  for (const id of ids) {
    const job = await queue.getJob(id);
    jobs[id] = job
      ? {
          state: await job.getState(), name: job.name, data: job.data, opts: job.opts,
          attemptsMade: job.attemptsMade, failedReason: job.failedReason,
          returnvalue: job.returnvalue, priority: job.priority, delay: job.delay,
          timestamp: job.timestamp,
        }
      : null;
  }
  process.stdout.write(JSON.stringify({ counts, failed, jobs }) + '\n');
  await queue.close();
})().catch((err) => { console.error(err); process.exit(1); });
