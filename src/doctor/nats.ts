/** NATS: connect as the daemon would (bus.servers, user / password / token) and say who answered. */
import { connect, type NatsConnection } from 'nats';
import { maskUrl } from '../config/mask.js';
import { errorText } from '../log.js';
import { makeProblem } from '../sdk/problems.js';
import { natsConnectSettings } from '../bus/nats-url.js';
import { fail, pass, type CheckResult, type DoctorContext } from './result.js';

export interface NatsCheck {
  result: CheckResult;
  /** The connection, when it succeeded; the heartbeat checks listen on it. The caller closes it. */
  nc?: NatsConnection;
}

export async function checkNats(ctx: DoctorContext): Promise<NatsCheck> {
  const bus = ctx.loaded.config.bus;
  // The same servers and credentials as the daemon (credentials in the URLs taken out of them).
  const { settings } = natsConnectSettings(bus.servers, bus);
  // Named as configured (user kept, password masked), as the daemon's problems name them.
  const servers = bus.servers.map(maskUrl).join(', ');
  const what = `NATS at ${servers}`;
  try {
    const nc = await connect({
      ...settings,
      name: `${bus.name}-doctor`,
      timeout: ctx.timeoutMs,
      reconnect: false,
      maxReconnectAttempts: 0,
    });
    return { result: pass('nats', what, `connected to ${maskUrl(nc.getServer())}`), nc };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const text = errorText(err);
    if (code === 'AUTHORIZATION_VIOLATION' || /authori[sz]ation/i.test(text)) {
      return { result: fail('nats', makeProblem('NATS_AUTH_REFUSED', { servers, error: 'authorization violation' })) };
    }
    const why =
      code === 'CONNECTION_REFUSED' || code === 'ECONNREFUSED'
        ? 'connection refused'
        : code === 'TIMEOUT'
          ? `no answer within ${ctx.timeoutMs}ms`
          : code === 'ENOTFOUND' || code === 'EAI_AGAIN'
            ? `cannot resolve the host (${String(code)})`
            : maskUrl(text);
    return { result: fail('nats', makeProblem('NATS_UNREACHABLE', { servers, error: why })) };
  }
}
