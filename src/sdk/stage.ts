/**
 * The lifecycle every stage may implement: built by its plugin's factory, started in order, stopped
 * in reverse. Each method is optional.
 */
export interface StageHealth {
  healthy: boolean;
  last_error: string | null;
}

/** Whether a stage has every one of these methods: what the guards of kinds and capabilities check. */
export function hasMethods(stage: object, ...names: string[]): boolean {
  return names.every((n) => typeof (stage as Record<string, unknown>)[n] === 'function');
}

export interface Stage {
  start?(): Promise<void> | void;
  stop?(): Promise<void> | void;
  /** Health shown in /v1/status; a stage without it is healthy once started. */
  health?(): StageHealth;
}
