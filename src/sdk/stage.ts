/**
 * The lifecycle every stage may implement: built by its plugin's factory, started in order, stopped
 * in reverse. Each method is optional.
 */
export interface StageHealth {
  healthy: boolean;
  last_error: string | null;
}

export interface Stage {
  start?(): Promise<void> | void;
  stop?(): Promise<void> | void;
  /** Health shown in /v1/status; a stage without it is healthy once started. */
  health?(): StageHealth;
}
