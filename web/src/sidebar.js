// The saved-chats list: switch, rename (inline), delete (a second click confirms), export and import buttons.
// It draws what it is given and reports what the person did; chats.js owns the conversations (the open one and
// the stored list), conversations.js the IndexedDB store.
//
// For tests: #conversation-list li[data-id][aria-current], buttons [data-action=open|rename|delete],
// the rename field input[data-action=rename-field], #export-button, #import-input.

import { conversationTitle } from "./conversations.js";

const ARM_MS = 4000; // a delete button stays armed this long

/**
 * @param {{onOpen: (id: string) => void, onRename: (id: string, title: string) => void,
 *          onDelete: (id: string) => void, onExport: () => void, onImport: (file: File) => void}} actions
 */
export function createSidebar(actions) {
  const $ = (id) => document.getElementById(id);
  const list = $("conversation-list");
  const status = $("conversation-status");
  const importInput = $("import-input");
  let busy = false;

  $("export-button").addEventListener("click", () => actions.onExport());
  $("import-button").addEventListener("click", () => importInput.click());
  importInput.addEventListener("change", () => {
    const [file] = importInput.files;
    importInput.value = "";
    if (file) actions.onImport(file);
  });

  function startRename(li, conversation) {
    const field = document.createElement("input");
    field.type = "text";
    field.value = conversationTitle(conversation);
    field.maxLength = 120;
    field.dataset.action = "rename-field";
    field.setAttribute("aria-label", "New name for this chat");
    li.querySelector(".conversation-title").replaceWith(field);
    field.focus();
    field.select();
    let settled = false;
    const finish = (save) => {
      if (settled) return;
      settled = true;
      if (save && field.value.trim()) actions.onRename(conversation.id, field.value.trim());
      else actions.onRename(conversation.id, null); // redraw unchanged
    };
    field.addEventListener("keydown", (event) => {
      if (event.key === "Enter") finish(true);
      else if (event.key === "Escape") finish(false);
    });
    field.addEventListener("blur", () => finish(true));
  }

  function iconButton(action, label, title) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "icon-button";
    b.dataset.action = action;
    b.textContent = label;
    b.title = title;
    b.setAttribute("aria-label", title);
    return b;
  }

  return {
    /** Draws the list: `conversations` (stored, newest first) plus the current one if it is not stored yet. */
    render(conversations, currentId) {
      list.replaceChildren();
      for (const c of conversations) {
        const li = document.createElement("li");
        li.dataset.id = c.id;
        li.setAttribute("aria-current", String(c.id === currentId));
        const open = document.createElement("button");
        open.type = "button";
        open.className = "conversation-title";
        open.dataset.action = "open";
        open.textContent = conversationTitle(c);
        open.title = conversationTitle(c);
        const rename = iconButton("rename", "Rename", `Rename “${conversationTitle(c)}”`);
        const remove = iconButton("delete", "Delete", `Delete “${conversationTitle(c)}”`);
        open.addEventListener("click", () => !busy && actions.onOpen(c.id));
        rename.addEventListener("click", () => !busy && startRename(li, c));
        let timer = null;
        remove.addEventListener("click", () => {
          if (busy) return;
          if (remove.dataset.armed === "true") {
            clearTimeout(timer);
            actions.onDelete(c.id);
            return;
          }
          remove.dataset.armed = "true";
          remove.textContent = "Delete?";
          timer = setTimeout(() => {
            remove.dataset.armed = "false";
            remove.textContent = "Delete";
          }, ARM_MS);
        });
        li.append(open, rename, remove);
        list.append(li);
      }
      if (conversations.length === 0) {
        const li = document.createElement("li");
        li.className = "muted small";
        li.textContent = "Chats you have are kept here, on this device.";
        list.append(li);
      }
    },
    say(text) {
      status.textContent = text;
    },
    setBusy(value) {
      busy = value;
      for (const b of list.querySelectorAll("button")) b.disabled = value;
    },
  };
}
