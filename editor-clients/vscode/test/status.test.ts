import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describe, statusView } from '../src/status';

test('starting, loading, ready with latency, error', () => {
  assert.equal(statusView(undefined, true).text, '$(loading~spin) Infill');
  assert.equal(statusView({ state: 'loading' }, true).text, '$(loading~spin) Infill');
  assert.equal(statusView({ state: 'ready' }, true).text, '$(sparkle) Infill');
  assert.equal(statusView({ state: 'ready', latencyMs: 83.6 }, true).text, '$(sparkle) Infill 84 ms');
  assert.equal(statusView({ state: 'ready', latencyMs: null }, true).text, '$(sparkle) Infill');
  const error = statusView({ state: 'error', message: 'no such model' }, true);
  assert.equal(error.text, '$(error) Infill');
  assert.ok(error.error && error.tooltip.includes('no such model'));
});

test('suggestions off shows as off, but an error still shows as an error', () => {
  assert.equal(statusView({ state: 'ready', latencyMs: 10 }, false).text, '$(circle-slash) Infill');
  assert.equal(statusView({ state: 'error' }, false).text, '$(error) Infill');
});

test('tooltip lists model, device and last latency', () => {
  const status = { state: 'ready', model: 'default', device: 'cuda:0/bfloat16', latencyMs: 41.2 };
  assert.equal(describe(status), 'Model: default\nDevice: cuda:0/bfloat16\nLast suggestion: 41 ms');
  assert.ok(statusView(status, true).tooltip.startsWith('Infill: ready\nModel: default'));
  assert.equal(describe(undefined), '');
});
