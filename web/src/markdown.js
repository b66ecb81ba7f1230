// Model output is untrusted text. It becomes DOM only through marked (markdown → HTML, with raw HTML
// escaped, not passed through) and then DOMPurify (an allow-list of tags and attributes), and is
// attached as a sanitized DocumentFragment, never assigned as an HTML string.

import { Marked } from "/static/vendor/marked.esm.js";
import DOMPurify from "/static/vendor/purify.es.mjs";

const escapeHtml = (s) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    // Raw HTML in model output is shown as text, never interpreted.
    html({ text }) {
      return escapeHtml(text);
    },
    // Images would make the page fetch arbitrary URLs (and break the same-origin promise): show a link-less label.
    image({ text, href }) {
      return `<span class="md-image">[image: ${escapeHtml(text || href || "")}]</span>`;
    },
  },
});

const ALLOWED_TAGS = [
  "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li",
  "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
  "input",
];
const ALLOWED_ATTR = ["href", "title", "class", "align", "start", "type", "checked", "disabled"];
const SAFE_URL = /^(?:https?:|mailto:|#|\/(?!\/)|\.{0,2}\/)/i;

const purifier = DOMPurify(globalThis.window);
purifier.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName === "type" && !(node.nodeName === "INPUT" && data.attrValue === "checkbox")) {
    data.keepAttr = false;
  }
});
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "INPUT") {
    node.setAttribute("disabled", "");
  }
  if (node.nodeName === "A") {
    const href = (node.getAttribute("href") ?? "").trim();
    if (!href || !SAFE_URL.test(href)) {
      node.removeAttribute("href");
    }
    node.setAttribute("rel", "noopener noreferrer nofollow");
    node.setAttribute("target", "_blank");
  }
});

const PURIFY_CONFIG = {
  ALLOWED_TAGS,
  ALLOWED_ATTR,
  ALLOW_DATA_ATTR: false,
  ADD_ATTR: ["target", "rel"],
  RETURN_DOM_FRAGMENT: true,
};

/** Markdown text → sanitized DocumentFragment. */
export function renderMarkdown(text) {
  const html = marked.parse(String(text ?? ""));
  return purifier.sanitize(html, PURIFY_CONFIG);
}

/** Replaces `element`'s children with the rendered, sanitized markdown of `text`. */
export function setMarkdown(element, text) {
  element.replaceChildren(renderMarkdown(text));
}
