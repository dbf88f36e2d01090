/**
 * How `hmgate doctor` prints while it runs: each check's line as soon as it is known (in the fixed
 * order), and, on a terminal only, one spinner line below them naming what is still being waited
 * for and for how long. The spinner line is rewritten in place (\r, erase line) and erased before
 * each check line and at the end, so what stays on the screen is the lines alone. Piped or
 * redirected, only the lines are written: the same bytes as without progress.
 */

/** Where the output goes: process.stdout, or a test's fake. */
export interface ProgressStream {
  isTTY?: boolean;
  /** The terminal's width, when known: the spinner line is cut to fit. */
  columns?: number;
  write(s: string): unknown;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const ERASE_LINE = '\r\x1b[2K';

export class DoctorOutput {
  private waitingFor: readonly string[] = [];
  private timer: ReturnType<typeof setInterval> | undefined;
  private frame = 0;
  private shown = false;
  private readonly started: number;
  private readonly tty: boolean;

  constructor(
    private readonly out: ProgressStream,
    private readonly opts: { intervalMs?: number; now?: () => number } = {},
  ) {
    this.tty = out.isTTY === true;
    this.started = this.now();
  }

  /** A check's line. */
  line(text: string): void {
    this.erase();
    this.out.write(`${text}\n`);
    this.draw();
  }

  /** What the doctor is waiting for now (none: the spinner goes). */
  waiting(what: readonly string[]): void {
    if (!this.tty) return;
    this.waitingFor = what;
    if (what.length === 0) {
      this.stopTimer();
      this.erase();
      return;
    }
    if (!this.timer) {
      this.timer = setInterval(() => {
        this.frame = (this.frame + 1) % FRAMES.length;
        this.draw();
      }, this.opts.intervalMs ?? 100);
      this.timer.unref();
    }
    this.draw();
  }

  /** Erases the spinner for good; the lines stay. */
  close(): void {
    this.waitingFor = [];
    this.stopTimer();
    this.erase();
  }

  /** The spinner line as it would be drawn now ('' when none). */
  spinnerText(): string {
    if (!this.tty || this.waitingFor.length === 0) return '';
    const seconds = Math.floor((this.now() - this.started) / 1000);
    const text = `${FRAMES[this.frame]} waiting for ${this.waitingFor.join(', ')} (${seconds}s)`;
    // A pseudo-terminal of unknown size says 0 columns.
    const width = (this.out.columns && this.out.columns > 20 ? this.out.columns : 80) - 1;
    return text.length > width ? `${text.slice(0, Math.max(0, width - 1))}…` : text;
  }

  private draw(): void {
    const text = this.spinnerText();
    if (!text) return;
    this.out.write(`${ERASE_LINE}${text}`);
    this.shown = true;
  }

  private erase(): void {
    if (!this.shown) return;
    this.out.write(ERASE_LINE);
    this.shown = false;
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : performance.now();
  }
}
