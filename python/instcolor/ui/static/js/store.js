// @ts-check
/** The editor's state and change notification (no DOM: node --test imports it).
 *
 * Undoable parts (changed only through commands.js): hints, exclude, global.
 * UI parts (set directly): session, selected, color, patchSize, recent, view, busy, message.
 */

/** @typedef {{id: number, x: number, y: number, rgb?: string, ab?: number[], size: number}} Hint */
/** @typedef {{histogram: number[] | null, saturation: number | null, reference: string | null}} Global */

export function initialState() {
  return {
    /** @type {null | {session: string, width: number, height: number, size: number,
     *   preview: {width: number, height: number}, instances: any[]}} */
    session: null,
    /** @type {Hint[]} */
    hints: [],
    /** @type {number[]} box indices left out, sorted */
    exclude: [],
    /** @type {Global} */
    global: { histogram: null, saturation: null, reference: null },
    /** @type {number | null} */
    selected: null,
    color: "#3366cc",
    patchSize: 3,
    /** @type {string[]} */
    recent: [],
    nextId: 1,
  };
}

export class Store {
  constructor() {
    this.state = initialState();
    /** @type {Set<(reason: string) => void>} */
    this.listeners = new Set();
  }

  /** @param {(reason: string) => void} fn */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** @param {string} reason "edit" (hints/exclude/global changed), "ui", "session" */
  notify(reason) {
    for (const fn of this.listeners) fn(reason);
  }

  /** @param {Partial<ReturnType<typeof initialState>>} patch */
  set(patch, reason = "ui") {
    Object.assign(this.state, patch);
    this.notify(reason);
  }

  /** @param {number | null} id */
  hint(id) {
    return this.state.hints.find((h) => h.id === id) || null;
  }

  /** A hint object as the API takes it ({x, y, rgb | ab, size}). @param {Hint} h */
  static apiHint(h) {
    const out = { x: h.x, y: h.y };
    if (h.rgb) out.rgb = h.rgb;
    else out.ab = h.ab;
    out.size = h.size;
    return out;
  }

  /** What a colorization depends on: the body of /preview and /result (plus format). */
  editBody() {
    const s = this.state;
    const body = { hints: s.hints.map(Store.apiHint), exclude: [...s.exclude] };
    const g = {};
    if (s.global.histogram) g.histogram = s.global.histogram;
    if (s.global.saturation !== null) g.saturation = s.global.saturation;
    if (Object.keys(g).length) body.global = g;
    return body;
  }

  /** @param {string} rgb */
  useColor(rgb) {
    const recent = [rgb, ...this.state.recent.filter((c) => c !== rgb)].slice(0, 12);
    this.set({ color: rgb, recent });
  }
}
