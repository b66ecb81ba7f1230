// The storage panel: the model caches on this device (size, revision, stale revisions marked) with a verify and a
// delete button each, the images saved chats keep (count and bytes: #storage-summary[data-images][data-image-bytes]),
// and the site's usage against its quota.

import { deleteModelCache, listModelCaches, storageNumbers, verifyModelCache } from "./cache.js";
import { fmtBytes } from "./progress.js";

/** "2 images (310 kB)" for the summary line. Pure. */
export function imagesLine(usage) {
  if (!usage) return "";
  const n = usage.count;
  return ` · saved chats keep ${n} image${n === 1 ? "" : "s"} (${fmtBytes(usage.bytes)})`;
}

/**
 * @param {{summary: HTMLElement, list: HTMLElement, catalog: object[],
 *          imageUsage?: () => Promise<{count: number, bytes: number} | null>}} options
 *   imageUsage: the kept images of saved chats (chats.js)
 */
export function createStoragePanel({ summary, list, catalog, imageUsage = async () => null }) {
  async function refresh() {
    const images = await imageUsage().catch(() => null);
    summary.dataset.images = String(images?.count ?? "");
    summary.dataset.imageBytes = String(images?.bytes ?? "");
    if (typeof caches === "undefined") {
      summary.textContent = `This browser has no Cache Storage here (it needs https or localhost)${imagesLine(images)}.`;
      return;
    }
    const [models, numbers, persisted] = await Promise.all([
      listModelCaches(),
      storageNumbers(),
      navigator.storage?.persisted?.().catch(() => false) ?? false,
    ]);
    list.replaceChildren();
    for (const m of models) {
      const row = document.createElement("li");
      row.dataset.cacheName = m.name;
      row.dataset.bytes = String(m.bytes);
      const label = document.createElement("span");
      const known = catalog.find((c) => c.id === m.id);
      const stale = known && known.revision !== m.revision ? " (not the served revision)" : "";
      label.textContent = `${known?.name ?? m.id} · revision ${m.revision}${stale} · ${fmtBytes(m.bytes)} in ${m.files} files`;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "storage-delete";
      button.textContent = "Delete";
      button.setAttribute("aria-label", `Delete ${m.id} revision ${m.revision} from this device`);
      button.addEventListener("click", async () => {
        button.disabled = true;
        await deleteModelCache(m.name);
        await refresh();
      });
      // "Verify": hashes every stored byte (loads trust the verified stamps of untouched entries: cache.js).
      const verify = document.createElement("button");
      verify.type = "button";
      verify.className = "storage-verify";
      verify.textContent = "Verify";
      verify.setAttribute("aria-label", `Check every stored byte of ${m.id} revision ${m.revision}`);
      verify.addEventListener("click", async () => {
        verify.disabled = true;
        const result = await verifyModelCache(m.name);
        row.dataset.verified = JSON.stringify(result);
        label.textContent += result.damaged.length
          ? ` · ${result.damaged.length} damaged file(s) removed: load the model again to fetch them`
          : ` · ${result.verified.length} files intact`;
        verify.disabled = false;
      });
      row.append(label, verify, button);
      list.append(row);
    }
    if (models.length === 0) {
      const row = document.createElement("li");
      row.className = "muted";
      row.textContent = "No model is stored on this device yet.";
      list.append(row);
    }
    const used = numbers
      ? `${fmtBytes(numbers.usage)} used of about ${fmtBytes(numbers.quota)} available to this site`
      : "Usage unknown";
    summary.textContent = `${used}${imagesLine(images)}${persisted ? " · persistent storage granted" : ""}.`;
    summary.dataset.usage = String(numbers?.usage ?? "");
    summary.dataset.quota = String(numbers?.quota ?? "");
    document.body.dataset.storageRefreshed = String(Date.now());
  }
  return { refresh };
}
