// Drives a running `ferry serve` with the official `openai` package, as a user's program would:
// a completion, a chat completion, a streamed chat completion, 8 concurrent clients and a bad
// request. Usage: node client.mjs BASE_URL [API_KEY]. Exits nonzero on the first failure.
import OpenAI from 'openai';

const [baseURL, apiKey = 'unused'] = process.argv.slice(2);
if (!baseURL) {
  console.error('usage: node client.mjs BASE_URL [API_KEY]');
  process.exit(2);
}

function check(condition, what, detail) {
  if (!condition) {
    throw new Error(`${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
  }
}

function checkUsage(usage, what) {
  check(usage && Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0,
        `${what}: usage.prompt_tokens`, usage);
  check(Number.isInteger(usage.completion_tokens) && usage.completion_tokens > 0,
        `${what}: usage.completion_tokens`, usage);
  check(usage.total_tokens === usage.prompt_tokens + usage.completion_tokens,
        `${what}: usage.total_tokens`, usage);
}

const openai = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 120_000 });
const greedy = { temperature: 0, max_tokens: 12 };

async function main() {
  const models = await openai.models.list();
  check(models.data.length === 1, 'models.list: one model', models.data);
  const model = models.data[0].id;

  // A completion.
  const completion = await openai.completions.create({ model, prompt: 'Hello', ...greedy });
  check(completion.object === 'text_completion', 'completion.object', completion.object);
  check(typeof completion.choices[0].text === 'string', 'completion text', completion.choices);
  check(['stop', 'length'].includes(completion.choices[0].finish_reason), 'completion finish',
        completion.choices[0]);
  checkUsage(completion.usage, 'completion');
  console.log(`completion: ${JSON.stringify(completion.choices[0].text)}`);

  // A chat completion.
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Say hello.' },
  ];
  const chat = await openai.chat.completions.create({ model, messages, ...greedy });
  check(chat.object === 'chat.completion', 'chat.object', chat.object);
  check(chat.choices[0].message.role === 'assistant', 'chat role', chat.choices[0].message);
  check(typeof chat.choices[0].message.content === 'string', 'chat content', chat.choices[0]);
  check(['stop', 'length'].includes(chat.choices[0].finish_reason), 'chat finish', chat.choices[0]);
  checkUsage(chat.usage, 'chat');
  console.log(`chat: ${JSON.stringify(chat.choices[0].message.content)}`);

  // The same chat, streamed: the deltas make the same text (greedy), the first one carries the
  // role, one chunk the finish reason, and usage comes at the end.
  const stream = await openai.chat.completions.create({
    model, messages, ...greedy, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let role;
  let finish;
  let usage;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    check(chunk.object === 'chat.completion.chunk', 'chunk.object', chunk);
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta.role) role ??= choice.delta.role;
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  check(chunks >= 2, 'stream chunks', chunks);
  check(role === 'assistant', 'stream role', role);
  check(finish === chat.choices[0].finish_reason, 'stream finish', { finish, whole: chat.choices[0] });
  check(text === chat.choices[0].message.content, 'stream text equals the whole answer',
        { text, whole: chat.choices[0].message.content });
  checkUsage(usage, 'stream');
  check(usage.completion_tokens === chat.usage.completion_tokens, 'stream usage', { usage, whole: chat.usage });
  console.log(`stream: ${chunks} chunks`);

  // 8 concurrent clients (continuous batching) get what each gets alone (greedy).
  const prompts = Array.from({ length: 8 }, (_, i) => `Client ${i} says`);
  const alone = [];
  for (const prompt of prompts) {
    alone.push((await openai.completions.create({ model, prompt, ...greedy })).choices[0].text);
  }
  const together = await Promise.all(prompts.map(async (prompt, i) => {
    const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 120_000 });
    const r = await client.completions.create({ model, prompt, ...greedy });
    checkUsage(r.usage, `concurrent client ${i}`);
    return r.choices[0].text;
  }));
  for (let i = 0; i < prompts.length; i += 1) {
    check(together[i] === alone[i], `concurrent client ${i} equals its answer alone`,
          { together: together[i], alone: alone[i] });
  }
  console.log('concurrent: 8 clients');

  // A bad request is a 400 the package reads as BadRequestError; the server goes on.
  try {
    await openai.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 });
    check(false, 'an unknown model is refused');
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError, 'unknown model: BadRequestError', String(e));
    check(e.status === 400 && (e.code ?? e.error?.code) === 'model_not_found', 'unknown model error', e.error);
  }
  await openai.models.list();
  console.log('openai client: all checks passed');
}

main().catch((e) => {
  console.error(`openai client: FAILED: ${e.stack ?? e}`);
  process.exit(1);
});
