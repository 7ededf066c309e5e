// Queue-level settings a Node deployment makes: a global rate limit, pause and resume.
// usage: node admin.cjs <redis-url> <queue> ratelimit <max> <duration-ms> | pause | resume
'use strict';
const { Queue } = require('bullmq');

const [url, queueName, command, ...args] = process.argv.slice(2);

(async () => {
  const queue = new Queue(queueName, { connection: { url } });
  if (command === 'ratelimit') await queue.setGlobalRateLimit(Number(args[0]), Number(args[1]));
  else if (command === 'pause') await queue.pause();
  else if (command === 'resume') await queue.resume();
  else throw new Error(`unknown command ${command}`);
  process.stdout.write(JSON.stringify({ ok: command }) + '\n');
  await queue.close();
})().catch((err) => { console.error(err); process.exit(1); });
