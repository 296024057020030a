// @ts-check
/** Every undoable edit is a command with execute(state) / undo(state). Hints are data
 * ({id, x, y, rgb | ab, size}), never canvas snapshots. No DOM. */

/** @typedef {import("./store.js").Hint} Hint */

const clone = (/** @type {any} */ o) => (o === undefined ? undefined : JSON.parse(JSON.stringify(o)));

export class AddHint {
  /** @param {Hint} hint */
  constructor(hint) { this.hint = clone(hint); }
  execute(s) { s.hints.push(clone(this.hint)); s.selected = this.hint.id; }
  undo(s) {
    s.hints = s.hints.filter((h) => h.id !== this.hint.id);
    if (s.selected === this.hint.id) s.selected = null;
  }
}

export class RemoveHint {
  /** @param {Hint} hint */
  constructor(hint) { this.hint = clone(hint); this.index = -1; }
  execute(s) {
    this.index = s.hints.findIndex((h) => h.id === this.hint.id);
    if (this.index >= 0) s.hints.splice(this.index, 1);
    if (s.selected === this.hint.id) s.selected = null;
  }
  undo(s) {
    s.hints.splice(Math.max(0, this.index), 0, clone(this.hint));
    s.selected = this.hint.id;
  }
}

/** Change fields of one hint (move, colour, patch size). Successive changes of the same fields of
 * the same hint within ``mergeMs`` fold into one undo step (scrubbing a colour or a size). */
export class UpdateHint {
  /** @param {Hint} before @param {Partial<Hint>} changes */
  constructor(before, changes, mergeMs = 500) {
    this.id = before.id;
    this.before = {};
    for (const k of Object.keys(changes)) this.before[k] = clone(before[k]);
    if ("rgb" in changes) this.before.ab = clone(before.ab);
    if ("ab" in changes) this.before.rgb = clone(before.rgb);
    this.after = clone(changes);
    if ("rgb" in changes) this.after.ab = undefined;
    if ("ab" in changes) this.after.rgb = undefined;
    this.time = Date.now();
    this.mergeMs = mergeMs;
  }
  apply(s, fields) {
    const h = s.hints.find((x) => x.id === this.id);
    if (!h) return;
    for (const [k, v] of Object.entries(fields)) {
      if (v === undefined) delete h[k]; else h[k] = clone(v);
    }
    s.selected = this.id;
  }
  execute(s) { this.apply(s, this.after); }
  undo(s) { this.apply(s, this.before); }
  canMerge(other) {
    const keys = (o) => Object.keys(o).sort().join(",");
    return other instanceof UpdateHint && other.id === this.id && keys(other.after) === keys(this.after)
      && other.time - this.time < this.mergeMs && !("x" in this.after);
  }
  merge(other) { this.after = clone(other.after); this.time = other.time; }
}

export class ToggleBox {
  /** @param {number} index */
  constructor(index) { this.index = index; }
  execute(s) {
    s.exclude = s.exclude.includes(this.index)
      ? s.exclude.filter((i) => i !== this.index)
      : [...s.exclude, this.index].sort((a, b) => a - b);
  }
  undo(s) { this.execute(s); }
}

/** Set global hints (reference histogram and/or saturation); merges slider scrubs. */
export class SetGlobal {
  /** @param {import("./store.js").Global} before @param {Partial<import("./store.js").Global>} changes */
  constructor(before, changes, mergeMs = 500) {
    this.before = clone(before);
    this.after = { ...clone(before), ...clone(changes) };
    this.onlySaturation = Object.keys(changes).every((k) => k === "saturation");
    this.time = Date.now();
    this.mergeMs = mergeMs;
  }
  execute(s) { s.global = clone(this.after); }
  undo(s) { s.global = clone(this.before); }
  canMerge(other) {
    return other instanceof SetGlobal && this.onlySaturation && other.onlySaturation
      && other.time - this.time < this.mergeMs;
  }
  merge(other) { this.after = clone(other.after); this.time = other.time; }
}

/** Replace the whole hint set (loading a file, "clear hints"): one undo step. */
export class ReplaceHints {
  /** @param {any} state @param {Hint[]} hints @param {import("./store.js").Global | null} global */
  constructor(state, hints, global) {
    this.before = { hints: clone(state.hints), global: clone(state.global), selected: state.selected };
    this.after = { hints: clone(hints), global: clone(global || state.global) };
  }
  execute(s) { s.hints = clone(this.after.hints); s.global = clone(this.after.global); s.selected = null; }
  undo(s) { s.hints = clone(this.before.hints); s.global = clone(this.before.global); s.selected = this.before.selected; }
}
