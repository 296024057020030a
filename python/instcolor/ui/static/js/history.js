// @ts-check
/** Undo/redo of commands (commands.js). A new command clears the redo stack; the undo stack is
 * bounded; each change notifies the store once with reason "edit". No DOM. */

export class History {
  /** @param {import("./store.js").Store} store @param {number} limit */
  constructor(store, limit = 200) {
    this.store = store;
    this.limit = limit;
    /** @type {any[]} */
    this.undos = [];
    /** @type {any[]} */
    this.redos = [];
  }

  /** Run ``cmd`` and record it (merged into the previous one when both allow it). */
  execute(cmd) {
    cmd.execute(this.store.state);
    const last = this.undos[this.undos.length - 1];
    if (last && last.canMerge && last.canMerge(cmd)) {
      last.merge(cmd);
    } else {
      this.undos.push(cmd);
      if (this.undos.length > this.limit) this.undos.shift();
    }
    this.redos.length = 0;
    this.store.notify("edit");
  }

  undo() {
    const cmd = this.undos.pop();
    if (!cmd) return false;
    cmd.undo(this.store.state);
    this.redos.push(cmd);
    this.store.notify("edit");
    return true;
  }

  redo() {
    const cmd = this.redos.pop();
    if (!cmd) return false;
    cmd.execute(this.store.state);
    this.undos.push(cmd);
    this.store.notify("edit");
    return true;
  }

  clear() {
    this.undos.length = 0;
    this.redos.length = 0;
    this.store.notify("ui");
  }

  get canUndo() { return this.undos.length > 0; }
  get canRedo() { return this.redos.length > 0; }
}
