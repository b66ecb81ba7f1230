// Where things live on a narrow screen (≤ 600 px, the same width as style.css's phone rules): the conversation fills
// the screen; the saved chats are a drawer (#conversations) opened by #chats-button; the model, its card, the chat
// settings and the storage are one sheet (#model-sheet) opened by #model-button; once a model is ready the status is
// one line (#status-toggle) that shows all of it on a tap. On a wider screen all of it sits on the page as before and
// none of this applies. Errors and warnings live in #status-area, which no drawer or sheet covers.
//
// main.js calls: setState(state) with every body[data-state] change, setSummary(text) when a model is ready and
// after each reply, offerLoad() when the start-up check finds nothing to load by itself, enterIsNewline() on Enter.
// For tests: body[data-drawer|data-sheet] = open|closed, body[data-status] = collapsed|expanded (phone, ready),
// aria-expanded on #chats-button, #model-button and #status-toggle.

const PHONE = "(max-width: 600px)";
const TOUCH = "(pointer: coarse)"; // the main pointer is a finger: the on-screen keyboard's Enter makes a new line
const FOCUSABLE = "button:not([disabled]), [href], input:not([disabled]):not([type=hidden]), select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])";
// Set by models.js once a model has loaded here: a returning person is not shown the model sheet by default.
const LAST_MODEL_KEY = "edge-chat-last-model";

/** @param {Document} doc */
export function createLayout(doc = document) {
  const $ = (id) => /** @type {HTMLElement} */ (doc.getElementById(id));
  const body = doc.body;
  const el = {
    topbar: /** @type {HTMLElement} */ (doc.querySelector(".topbar")),
    mainColumn: /** @type {HTMLElement} */ (doc.querySelector(".main-column")),
    chat: /** @type {HTMLElement} */ (doc.querySelector("main.chat")),
    backdrop: $("backdrop"),
    drawer: $("conversations"),
    drawerButton: $("chats-button"),
    drawerClose: $("chats-close"),
    sheet: $("model-sheet"),
    sheetButton: $("model-button"),
    sheetClose: $("model-sheet-close"),
    statusArea: $("status-area"),
    statusToggle: $("status-toggle"),
    error: $("error"),
  };
  const phone = window.matchMedia(PHONE);
  /** @type {null | {panel: HTMLElement, button: HTMLElement, inert: HTMLElement[], name: string}} */
  let open = null;
  let summary = "";

  const panels = {
    drawer: { panel: el.drawer, button: el.drawerButton, inert: [el.topbar, el.mainColumn], name: "drawer" },
    // The status area stays readable (and its errors with it) above the sheet; only the conversation is put aside.
    sheet: { panel: el.sheet, button: el.sheetButton, inert: [el.drawer, el.chat], name: "sheet" },
  };

  function show(which, { focus = true } = {}) {
    if (!phone.matches) return;
    if (open && open !== which) hide(open, { restoreFocus: false });
    open = which;
    which.panel.dataset.open = "true";
    which.button.setAttribute("aria-expanded", "true");
    body.dataset[which.name] = "open";
    el.backdrop.hidden = false;
    for (const region of which.inert) region.inert = true;
    if (which === panels.sheet) placeSheet();
    if (focus) which.panel.querySelector(FOCUSABLE)?.focus();
  }

  function hide(which, { restoreFocus = true } = {}) {
    if (open !== which) return;
    open = null;
    delete which.panel.dataset.open;
    which.button.setAttribute("aria-expanded", "false");
    body.dataset[which.name] = "closed";
    el.backdrop.hidden = true;
    for (const region of which.inert) region.inert = false;
    // Back to the button that opened it, unless the person already moved on (a new chat focuses the message box).
    const active = doc.activeElement;
    if (restoreFocus && (!active || active === body || which.panel.contains(active))) which.button.focus();
  }

  const toggle = (which) => (open === which ? hide(which) : show(which));

  /** The sheet starts below the status area, so a status, a warning or an error is never under it. */
  function placeSheet() {
    const top = Math.max(0, Math.round(el.statusArea.getBoundingClientRect().bottom));
    el.sheet.style.setProperty("--sheet-top", `${top}px`);
  }
  new ResizeObserver(() => open === panels.sheet && placeSheet()).observe(el.statusArea);

  /** role=dialog only where the sheet is one (a phone); on a wide screen it is part of the page. */
  function applyMode() {
    if (open) hide(open, { restoreFocus: false });
    if (phone.matches) {
      el.sheet.setAttribute("role", "dialog");
      body.dataset.drawer = "closed";
      body.dataset.sheet = "closed";
    } else {
      el.sheet.removeAttribute("role");
      delete body.dataset.drawer;
      delete body.dataset.sheet;
    }
    showStatus();
  }

  function showStatus(expanded = body.dataset.status === "expanded") {
    const collapsible = phone.matches && Boolean(summary);
    el.statusToggle.hidden = !collapsible;
    if (!collapsible) {
      delete body.dataset.status;
      return;
    }
    el.statusToggle.textContent = summary;
    el.statusToggle.setAttribute("aria-expanded", String(expanded));
    body.dataset.status = expanded ? "expanded" : "collapsed";
  }

  el.drawerButton.addEventListener("click", () => toggle(panels.drawer));
  el.sheetButton.addEventListener("click", () => toggle(panels.sheet));
  el.drawerClose.addEventListener("click", () => hide(panels.drawer));
  el.sheetClose.addEventListener("click", () => hide(panels.sheet));
  el.backdrop.addEventListener("click", () => open && hide(open));
  el.statusToggle.addEventListener("click", () => showStatus(body.dataset.status !== "expanded"));
  doc.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !open) return;
    const target = /** @type {HTMLElement} */ (event.target);
    if (target?.matches?.("input[data-action=rename-field]")) return; // Escape there cancels the rename only
    event.preventDefault();
    hide(open);
  });
  // Choosing a chat or starting one is what the drawer was opened for.
  el.drawer.addEventListener("click", (event) => {
    const target = /** @type {HTMLElement} */ (event.target);
    if (target.closest("[data-action=open], #new-chat-button")) hide(panels.drawer, { restoreFocus: false });
  });
  // An error must be seen: a drawer that would cover part of it closes.
  new MutationObserver(() => {
    if (!el.error.hidden && open === panels.drawer) hide(panels.drawer, { restoreFocus: false });
  }).observe(el.error, { attributes: true, attributeFilter: ["hidden"] });
  phone.addEventListener("change", applyMode);

  // Browsers without interactive-widget=resizes-content (Safari) keep the layout viewport under the on-screen
  // keyboard: the page's height follows the visual viewport there, so the composer stays above the keyboard.
  const viewport = window.visualViewport;
  if (viewport) {
    const fit = () => {
      if (Math.abs(viewport.scale - 1) > 0.01) return; // a pinch zoom is no keyboard: the page keeps its height
      body.style.setProperty("--app-height", `${Math.round(viewport.height)}px`);
    };
    viewport.addEventListener("resize", fit);
    fit();
  }

  applyMode();

  const touch = window.matchMedia(TOUCH);
  const prompt = /** @type {HTMLTextAreaElement} */ ($("prompt"));
  const hint = prompt.placeholder;
  const showHint = () => {
    prompt.placeholder = touch.matches ? "Message Edge Chat…" : hint; // the Enter / Shift+Enter hint is for keyboards
  };
  touch.addEventListener("change", showHint);
  showHint();

  let returning = false;
  try {
    returning = Boolean(localStorage.getItem(LAST_MODEL_KEY));
  } catch {
    // storage off: treated as a first visit
  }
  // A first visit on a phone opens on the model, its download size and the Load button.
  if (!returning) show(panels.sheet, { focus: false });

  return {
    /** @param {string} state body[data-state] */
    setState(state) {
      if (state === "loading") {
        summary = ""; // the status says what is loading, in full
        if (open === panels.sheet) hide(panels.sheet); // the progress, above, is what matters now
        showStatus(false);
      } else if (state === "idle") {
        summary = "";
        showStatus(false);
      }
    },
    /** @param {string} text the one-line status: model · device · speed */
    setSummary(text) {
      summary = text;
      showStatus(body.dataset.status === "expanded");
    },
    /** Enter in the message box adds a line instead of sending (a touch screen). */
    enterIsNewline: () => touch.matches,
    /** Nothing loads by itself: on a phone the model sheet (size, Load) is shown unless something is open. */
    offerLoad() {
      if (!open && body.dataset.state === "idle") show(panels.sheet, { focus: false });
    },
  };
}
