// An external A2A agent built with the official JavaScript SDK
// (@a2a-js/sdk + express), for fangd's client-side tests.
//
//   node server.cjs [token]
//
// It listens on a free loopback port, prints "listening <base url>" and
// answers every message "js says: <text>" as a streamed task (submitted,
// working, artifact, completed). A text of "slow" waits until cancelled.
// With a token, JSON-RPC calls without "Authorization: Bearer <token>" get
// 401 (the card stays public).
const crypto = require('node:crypto');
const express = require('express');
const { TaskState, Role, AGENT_CARD_PATH, A2A_PROTOCOL_VERSION } = require('@a2a-js/sdk');
const { DefaultRequestHandler, InMemoryTaskStore, AgentEvent } = require('@a2a-js/sdk/server');
const { agentCardHandler, jsonRpcHandler, UserBuilder } = require('@a2a-js/sdk/server/express');

const token = process.argv[2] || '';

function textPart(text) {
  return { content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: 'text/plain' };
}

class EchoExecutor {
  constructor() { this.cancelled = new Set(); }

  cancelTask = async (taskId) => { this.cancelled.add(taskId); };

  async execute(ctx, bus) {
    const { taskId, contextId, userMessage } = ctx;
    const text = userMessage.parts.filter((p) => p.content && p.content.$case === 'text').map((p) => p.content.value).join(' ');
    const status = (state) => AgentEvent.statusUpdate({ taskId, contextId, status: { state, timestamp: new Date().toISOString(), message: undefined }, metadata: {} });
    bus.publish(AgentEvent.task(ctx.task || { id: taskId, contextId, status: { state: TaskState.TASK_STATE_SUBMITTED, timestamp: new Date().toISOString(), message: undefined }, artifacts: [], history: [userMessage], metadata: {} }));
    bus.publish(status(TaskState.TASK_STATE_WORKING));
    if (text === 'slow') {
      while (!this.cancelled.has(taskId)) await new Promise((r) => setTimeout(r, 20));
    }
    if (this.cancelled.has(taskId)) {
      bus.publish(status(TaskState.TASK_STATE_CANCELED));
      bus.finished();
      return;
    }
    bus.publish(AgentEvent.artifactUpdate({ taskId, contextId, append: false, lastChunk: true, metadata: undefined,
      artifact: { artifactId: crypto.randomUUID(), name: 'answer', description: '', parts: [textPart('js says: ' + text)], metadata: undefined, extensions: [] } }));
    bus.publish(status(TaskState.TASK_STATE_COMPLETED));
    bus.finished();
  }
}

const app = express();
const server = app.listen(0, '127.0.0.1', () => {
  const base = 'http://127.0.0.1:' + server.address().port;
  const card = {
    name: 'JS Echo Agent',
    description: 'An agent built with @a2a-js/sdk that echoes',
    supportedInterfaces: [{ url: base + '/rpc', protocolBinding: 'JSONRPC', tenant: '', protocolVersion: A2A_PROTOCOL_VERSION }],
    provider: undefined,
    version: '1.3.0-test',
    capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes: {},
    securityRequirements: [],
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: [{ id: 'echo', name: 'Echo', description: 'Echoes what it is told', tags: ['test'], examples: [], inputModes: [], outputModes: [], securityRequirements: [] }],
    documentationUrl: '',
    signatures: [],
  };
  const handler = new DefaultRequestHandler(card, new InMemoryTaskStore(), new EchoExecutor());
  app.use('/' + AGENT_CARD_PATH, agentCardHandler({ agentCardProvider: handler }));
  app.use('/rpc', (req, res, next) => {
    if (token && req.headers.authorization !== 'Bearer ' + token) {
      res.status(401).json({ error: 'unauthorized' });
      return;
    }
    next();
  });
  app.use('/rpc', jsonRpcHandler({ requestHandler: handler, userBuilder: UserBuilder.noAuthentication }));
  console.log('listening ' + base);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
