// `node --import ./scripts/node-vendor.mjs`: lets Node import the page's modules as the browser does, mapping
// their "/static/vendor/<file>" imports (served from web/vendor/ by the app) to the files in web/vendor/.
import { register } from "node:module";

const VENDOR = "/static/vendor/";

/** Node's resolve hook: only the vendor prefix is rewritten. */
export async function resolve(specifier, context, nextResolve) {
  if (specifier.startsWith(VENDOR)) {
    return { url: new URL(`../vendor/${specifier.slice(VENDOR.length)}`, import.meta.url).href, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}

if (!process.env.EDGE_CHAT_VENDOR_HOOK) {
  process.env.EDGE_CHAT_VENDOR_HOOK = "1"; // the hooks thread imports this file too: register once
  register(import.meta.url);
}
