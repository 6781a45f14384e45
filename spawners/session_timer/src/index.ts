/**
 * @academy/session-timer: how long this Slurm-backed session has left.
 *
 * Reads GET <base_url>academy/session (the spawners.session_timer server extension):
 *   {"walltime_end": unix seconds | null, "now": unix seconds, "job_id": string | null}
 * and then, when walltime_end is set:
 *   - shows "Session: H:MM:SS left" in the status bar, updated every second, corrected for the
 *     difference between the browser's clock and the server's;
 *   - warns at 10 and at 2 minutes left (only the most urgent one if the page opens late);
 *   - runs docmanager:save-all at 60 and again at 20 seconds left, because Slurm ends the job
 *     at the limit and nothing on the server can save what is only in the browser.
 * When walltime_end is null (no Slurm, or the server extension is missing) it shows nothing.
 */

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

const PLUGIN_ID = '@academy/session-timer:plugin';
const ENDPOINT = 'academy/session';
const SAVE_ALL = 'docmanager:save-all';

/** Seconds left at which the learner is warned. */
const WARN_AT = [600, 120];
/** Seconds left at which all open documents are saved. */
const SAVE_AT = [60, 20];
/** Re-read the end time and the server clock this often. */
const RESYNC_MS = 5 * 60 * 1000;

interface ISessionInfo {
  walltime_end: number | null;
  now: number;
  job_id: string | null;
}

/** "1:23:45" */
export function formatLeft(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`;
}

function clockTime(ms: number): string {
  return new Date(ms).toLocaleTimeString([], {
    hour: '2-digit',
    minute: '2-digit'
  });
}

class SessionTimer {
  constructor(app: JupyterFrontEnd) {
    this._app = app;
    this.widget = new Widget();
    this.widget.id = 'academy-session-timer';
    this.widget.addClass('academy-SessionTimer');
  }

  readonly widget: Widget;
  readonly activeStateChanged = new Signal<this, void>(this);

  get active(): boolean {
    return this._endMs !== null;
  }

  async start(): Promise<void> {
    await this._sync();
    window.setInterval(() => this._tick(), 1000);
    window.setInterval(() => void this._sync(), RESYNC_MS);
    document.addEventListener('visibilitychange', () => this._tick());
  }

  /** Fetch the end time and measure the server's clock against the browser's. */
  private async _sync(): Promise<void> {
    const settings = ServerConnection.makeSettings();
    const url = URLExt.join(settings.baseUrl, ENDPOINT);
    let info: ISessionInfo;
    let offsetMs: number;
    try {
      const sent = Date.now();
      const response = await ServerConnection.makeRequest(
        url,
        { cache: 'no-store' },
        settings
      );
      const received = Date.now();
      if (!response.ok) {
        if (this._endMs === null) {
          console.info(`${PLUGIN_ID}: ${url} answered ${response.status}; no session timer`);
        }
        return;
      }
      info = (await response.json()) as ISessionInfo;
      // server clock minus browser clock, taken at the middle of the round trip
      offsetMs = info.now * 1000 - (sent + received) / 2;
    } catch (reason) {
      console.warn(`${PLUGIN_ID}: could not read ${url}`, reason);
      return;
    }
    const wasActive = this.active;
    this._offsetMs = offsetMs;
    this._jobId = info.job_id;
    this._endMs =
      typeof info.walltime_end === 'number' && isFinite(info.walltime_end)
        ? info.walltime_end * 1000
        : null;
    if (wasActive !== this.active) {
      this.activeStateChanged.emit();
    }
    this._scheduleSaves();
    this._tick();
  }

  /** Seconds left by the server's clock, or null without an end time. */
  private _secondsLeft(): number | null {
    if (this._endMs === null) {
      return null;
    }
    return (this._endMs - (Date.now() + this._offsetMs)) / 1000;
  }

  /**
   * One-shot timers for the save moments, besides the per-second check: background tabs get
   * their repeating timers throttled, single timers much less so.
   */
  private _scheduleSaves(): void {
    this._saveTimers.forEach(t => window.clearTimeout(t));
    this._saveTimers = [];
    const left = this._secondsLeft();
    if (left === null) {
      return;
    }
    for (const at of SAVE_AT) {
      if (left > at) {
        this._saveTimers.push(
          window.setTimeout(() => this._tick(), (left - at) * 1000 + 50)
        );
      }
    }
  }

  private _tick(): void {
    const left = this._secondsLeft();
    const node = this.widget.node;
    if (left === null) {
      node.textContent = '';
      return;
    }
    node.textContent = left > 0 ? `Session: ${formatLeft(left)} left` : 'Session: ended';
    node.title =
      `This session ends at ${clockTime(this._endMs!)} (its time limit)` +
      (this._jobId ? `; Slurm job ${this._jobId}` : '') +
      '. Open notebooks are saved automatically a minute before.';
    node.classList.toggle('academy-SessionTimer-warn', left <= WARN_AT[0] && left > WARN_AT[1]);
    node.classList.toggle('academy-SessionTimer-critical', left <= WARN_AT[1]);
    if (left <= 0) {
      return;
    }

    const warnNow = WARN_AT.filter(at => left <= at && !this._warned.has(at));
    if (warnNow.length > 0) {
      warnNow.forEach(at => this._warned.add(at));
      this._warn(left);
    }
    const saveNow = SAVE_AT.filter(at => left <= at && !this._saved.has(at));
    if (saveNow.length > 0) {
      saveNow.forEach(at => this._saved.add(at));
      this._saveAll(left);
    }
  }

  private _warn(left: number): void {
    const minutes = Math.max(1, Math.round(left / 60));
    const when = clockTime(this._endMs!);
    console.info(`${PLUGIN_ID}: ${Math.round(left)} s left, warning the learner`);
    if (this._notification) {
      Notification.dismiss(this._notification);
    }
    this._notification = Notification.warning(
      // Toasts show 140 characters at most: keep this short.
      `Your session ends in about ${minutes} minute${minutes === 1 ? '' : 's'} (at ${when}). ` +
        'Open notebooks will be saved automatically just before.',
      {
        autoClose: false,
        actions: [
          {
            label: 'Save all now',
            callback: () => void this._app.commands.execute(SAVE_ALL)
          }
        ]
      }
    );
  }

  private _saveAll(left: number): void {
    console.info(`${PLUGIN_ID}: ${Math.round(left)} s left, saving all open documents`);
    this._app.commands.execute(SAVE_ALL).catch(reason => {
      console.error(`${PLUGIN_ID}: ${SAVE_ALL} failed`, reason);
    });
    if (!this._savedNoticeShown) {
      this._savedNoticeShown = true;
      if (this._notification) {
        Notification.dismiss(this._notification);
      }
      this._notification = Notification.warning(
        'Your session ends in less than a minute. Saving all open notebooks now.',
        { autoClose: false }
      );
    }
  }

  private _app: JupyterFrontEnd;
  private _endMs: number | null = null;
  private _offsetMs = 0;
  private _jobId: string | null = null;
  private _warned = new Set<number>();
  private _saved = new Set<number>();
  private _saveTimers: number[] = [];
  private _notification: string | null = null;
  private _savedNoticeShown = false;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Shows the time left in this session, warns before the end and saves open notebooks in time.',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    const timer = new SessionTimer(app);
    if (statusBar) {
      statusBar.registerStatusItem('@academy/session-timer:status', {
        item: timer.widget,
        align: 'left',
        rank: 1000,
        isActive: () => timer.active,
        activeStateChanged: timer.activeStateChanged
      });
    }
    // Wait for the shell so that save-all finds the restored documents.
    void app.restored.then(() => timer.start());
  }
};

export default plugin;
