// An A2A client built with the official JavaScript SDK (@a2a-js/sdk),
// driven against fangd by fangd's tests.
//
//   node client.cjs <base url> <bearer token> <agent card url path or "">
//
// It resolves the agent card, then runs SendMessage, GetTask, streaming,
// a cancel of a running task and a cancel of a finished one, and prints one
// JSON object describing what it saw. Messages whose text is "block" are
// expected to keep the agent busy until cancelled.
const crypto = require('node:crypto');
const { TaskState, Role, taskStateToJSON } = require('@a2a-js/sdk');
const { ClientFactory } = require('@a2a-js/sdk/client');

const [base, token] = process.argv.slice(2);
const opts = { serviceParameters: { Authorization: 'Bearer ' + token } };

function message(text) {
  return {
    messageId: crypto.randomUUID(),
    role: Role.ROLE_USER,
    parts: [{ content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
    taskId: '', contextId: '', extensions: [], metadata: {}, referenceTaskIds: [],
  };
}

function request(text, configuration) {
  return { tenant: '', message: message(text), configuration, metadata: {} };
}

function texts(parts) {
  return (parts || []).filter((p) => p.content && p.content.$case === 'text').map((p) => p.content.value);
}

function errorOf(e) {
  return { name: e && e.constructor ? e.constructor.name : 'Error', code: e && e.code, message: String(e && e.message) };
}

async function main() {
  const out = {};
  const client = await new ClientFactory().createFromUrl(base);
  const card = await client.getAgentCard(opts);
  out.card = { name: card.name, streaming: card.capabilities && card.capabilities.streaming,
    interfaces: (card.supportedInterfaces || []).map((i) => i.protocolBinding + ' ' + i.protocolVersion + ' ' + i.url) };

  const sent = await client.sendMessage(request('hello from js'), opts);
  const task = sent.task || sent; // a Task (fangd answers SendMessage with the task)
  out.send = { id: task.id, state: taskStateToJSON(task.status.state),
    artifact: texts(task.artifacts && task.artifacts[0] && task.artifacts[0].parts).join(''),
    history: (task.history || []).length };

  const got = await client.getTask({ tenant: '', id: task.id, historyLength: undefined }, opts);
  out.get = { id: got.id, state: taskStateToJSON(got.status.state) };

  out.stream = [];
  for await (const ev of client.sendMessageStream(request('stream from js'), opts)) {
    const p = ev.payload || ev;
    if (p.$case === 'task') out.stream.push('task:' + taskStateToJSON(p.value.status.state));
    else if (p.$case === 'statusUpdate') out.stream.push('status:' + taskStateToJSON(p.value.status.state));
    else if (p.$case === 'artifactUpdate') out.stream.push('artifact:' + texts(p.value.artifact.parts).join(''));
    else if (p.$case === 'message') out.stream.push('message');
  }

  try {
    await client.cancelTask({ tenant: '', id: task.id, metadata: {} }, opts);
    out.cancelFinished = { ok: true };
  } catch (e) {
    out.cancelFinished = errorOf(e);
  }

  const running = await client.sendMessage(request('block', { returnImmediately: true, acceptedOutputModes: [], taskPushNotificationConfig: undefined, historyLength: undefined }), opts);
  const rt = running.task || running;
  out.running = { id: rt.id, state: taskStateToJSON(rt.status.state) };
  const cancelled = await client.cancelTask({ tenant: '', id: rt.id, metadata: {} }, opts);
  out.cancel = { id: cancelled.id, state: taskStateToJSON(cancelled.status.state) };

  try {
    await client.getTask({ tenant: '', id: 'no-such-task' }, opts);
    out.getUnknown = { ok: true };
  } catch (e) {
    out.getUnknown = errorOf(e);
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.log(JSON.stringify({ fatal: errorOf(e), stack: String(e && e.stack) }));
  process.exit(1);
});
