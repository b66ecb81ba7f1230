// The load progress: one row per file (verify / download / Transformers.js' own reads) and a total bar.

export const fmtBytes = (n) => {
  if (!Number.isFinite(n) || n <= 0) return "0 B";
  const units = ["B", "kB", "MB", "GB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
  return `${(n / 1000 ** i).toFixed(i >= 2 ? 1 : 0)} ${units[i]}`;
};

/** @param {{box: HTMLElement, total: HTMLProgressElement, totalText: HTMLElement, list: HTMLElement}} el */
export function createProgress(el) {
  const files = new Map(); // file → {loaded, total, bar, text, done}

  function row(file) {
    let entry = files.get(file);
    if (entry) return entry;
    const li = document.createElement("li");
    li.dataset.file = file;
    const name = document.createElement("span");
    name.className = "progress-label";
    name.textContent = file.replace(/^\//, "");
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    const text = document.createElement("span");
    text.className = "progress-text";
    li.append(name, bar, text);
    el.list.append(li);
    entry = { loaded: 0, total: 0, bar, text, done: false };
    files.set(file, entry);
    return entry;
  }

  return {
    reset() {
      files.clear();
      el.list.replaceChildren();
      el.total.value = 0;
      el.totalText.textContent = "";
      el.box.hidden = false;
    },
    hide() {
      el.box.hidden = true;
    },
    /** A progress reply: {file, loaded, total, status}. */
    update({ file, loaded, total, status }) {
      if (!file) return;
      const entry = row(file);
      if (Number.isFinite(loaded)) entry.loaded = loaded;
      if (Number.isFinite(total) && total > 0) entry.total = total;
      if (status === "done") {
        entry.done = true;
        if (entry.total) entry.loaded = entry.total;
      }
      entry.bar.value = entry.total ? entry.loaded / entry.total : entry.done ? 1 : 0;
      entry.text.textContent = entry.total
        ? `${fmtBytes(entry.loaded)} / ${fmtBytes(entry.total)}`
        : entry.done
          ? "done"
          : "";
      let sumLoaded = 0;
      let sumTotal = 0;
      for (const f of files.values()) {
        sumLoaded += f.loaded;
        sumTotal += f.total;
      }
      el.total.value = sumTotal ? sumLoaded / sumTotal : 0;
      el.totalText.textContent = `${fmtBytes(sumLoaded)} / ${fmtBytes(sumTotal)}`;
    },
  };
}
