import { pino } from 'pino';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { AlwaysLeader } from '../leadership/always-leader.js';
import type { FreshnessBoard } from './board.js';
import { FreshnessGate } from './gate.js';

describe('FreshnessGate.confirmLoss', () => {
  it('logs the loss of one silent agent in the singular', () => {
    const logged: string[] = [];
    const board = { evaluateGuards: () => [], confirmLoss: () => 1 } as unknown as FreshnessBoard;
    const gate = new FreshnessGate({
      on: true,
      board,
      logger: pino({ level: 'info' }, { write: (s: string) => void logged.push(String(JSON.parse(s).msg)) }),
      now: () => 0,
      heldBack: new Counter({ name: 'held_back_total', help: 'x', registers: [new Registry()] }),
      onGuardChange: () => undefined,
    });
    expect(gate.confirmLoss(new AlwaysLeader())).toEqual({ ok: true, confirmed: 1 });
    expect(logged).toEqual(['an operator confirmed the loss of 1 silent agent: their instances count as missing now']);
  });
});
