/**
 * Status-bar text for the server's `infill/status` notification. Pure: no `vscode` import.
 */

/** The payload of `infill/status` (and of the `infill.status` command). */
export interface Status {
  state: 'idle' | 'loading' | 'ready' | 'error' | string;
  message?: string;
  model?: string;
  device?: string;
  latencyMs?: number | null;
}

/** What the status-bar item shows. */
export interface StatusView {
  text: string;
  tooltip: string;
  error: boolean;
}

/** Status-bar text and tooltip for a status; `undefined` while the server starts. */
export function statusView(status: Status | undefined, enabled: boolean): StatusView {
  const details = describe(status);
  if (status === undefined) {
    return { text: '$(loading~spin) Infill', tooltip: 'Infill: starting the server', error: false };
  }
  if (status.state === 'error') {
    return { text: '$(error) Infill', tooltip: `Infill: error\n${details}`, error: true };
  }
  if (!enabled) {
    return { text: '$(circle-slash) Infill', tooltip: `Infill: suggestions off\n${details}`, error: false };
  }
  if (status.state === 'loading') {
    return { text: '$(loading~spin) Infill', tooltip: `Infill: loading the model\n${details}`, error: false };
  }
  if (status.state === 'ready') {
    const ms = latency(status);
    const text = ms === undefined ? '$(sparkle) Infill' : `$(sparkle) Infill ${ms} ms`;
    return { text, tooltip: `Infill: ready\n${details}`, error: false };
  }
  return { text: '$(circle-outline) Infill', tooltip: `Infill: ${status.state}\n${details}`, error: false };
}

function latency(status: Status): number | undefined {
  const ms = status.latencyMs;
  return typeof ms === 'number' && Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/** One line per known field: model, device, last latency, message. */
export function describe(status: Status | undefined): string {
  if (status === undefined) {
    return '';
  }
  const lines: string[] = [];
  if (status.model) {
    lines.push(`Model: ${status.model}`);
  }
  if (status.device) {
    lines.push(`Device: ${status.device}`);
  }
  const ms = latency(status);
  if (ms !== undefined) {
    lines.push(`Last suggestion: ${ms} ms`);
  }
  if (status.message) {
    lines.push(status.message);
  }
  return lines.join('\n');
}
