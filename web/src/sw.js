// Edge Chat's service worker (served by the app at /sw.js, scope "/"). Classic script: Workbox's
// loader uses importScripts, and every Workbox module comes from this origin (web/vendor/workbox/).
//
//   - app shell (web/src/*, the runtime in web/vendor): precached with content-hash revisions that the
//     app injects in place of the manifest placeholder below; a new app version is a new /sw.js, which
//     installs, skips waiting and claims the open pages (main.js then reloads or tells the user).
//   - the page "/" and /api/models*: network first (fresh catalog), the last good copy when offline.
//   - model artifacts /models/{id}/{revision}/...: from the per-revision model cache that the model worker
//     fills and verifies (web/src/cache.js), Range requests answered from it; otherwise the network.
//     The SW never stores model files itself: the worker checks every byte against the manifest first.
/* global workbox */
importScripts("/static/vendor/workbox/workbox-sw.js");
workbox.setConfig({ modulePathPrefix: "/static/vendor/workbox/", debug: false });
workbox.loadModule("workbox-core");
workbox.loadModule("workbox-precaching");
workbox.loadModule("workbox-routing");
workbox.loadModule("workbox-strategies");
workbox.loadModule("workbox-range-requests");

const PAGES_CACHE = "edge-chat-pages";
const API_CACHE = "edge-chat-api";

self.skipWaiting();
workbox.core.clientsClaim();

// `?v=` is the ORT version the worker appends to the wasm URLs; the precached copy is the same file.
workbox.precaching.precacheAndRoute(self.__WB_MANIFEST, {
  ignoreURLParametersMatching: [/^v$/, /^utm_/],
  cleanURLs: false,
  directoryIndex: null,
});
workbox.precaching.cleanupOutdatedCaches();

// The page itself: one cache entry whatever the query (?model=…&device=…), refreshed on every online visit.
const pageKey = { cacheKeyWillBeUsed: async () => new URL("/", self.location.origin).href };
const pages = new workbox.strategies.NetworkFirst({
  cacheName: PAGES_CACHE,
  networkTimeoutSeconds: 5,
  plugins: [pageKey],
});
workbox.routing.registerRoute(
  ({ request, url }) => request.mode === "navigate" && url.origin === self.location.origin && url.pathname === "/",
  pages,
);
self.addEventListener("install", (event) => {
  // The first visit happened before this SW existed: keep a copy of the page for offline starts.
  event.waitUntil(caches.open(PAGES_CACHE).then((cache) => cache.add(new Request("/", { cache: "reload" }))));
});

workbox.routing.registerRoute(
  ({ url }) => url.origin === self.location.origin && (url.pathname === "/api/models" || url.pathname.startsWith("/api/models/")),
  new workbox.strategies.NetworkFirst({ cacheName: API_CACHE, networkTimeoutSeconds: 5 }),
);

const MODEL_PATH = /^\/models\/([^/]+)\/([0-9a-f]{12})\/(.+)$/;

async function modelArtifact({ request, url }) {
  // Only the model caches hold /models/ URLs (cache.js keys every verified file by its revisioned URL here,
  // wherever it was downloaded from), so a match across all caches finds it without knowing cache names.
  const cached = await caches.match(url.href, { ignoreSearch: true });
  if (cached) {
    return request.headers.has("range") ? workbox.rangeRequests.createPartialResponse(request, cached) : cached;
  }
  try {
    return await fetch(request);
  } catch (err) {
    // Offline and not cached: a 404 lets Transformers.js treat optional files as absent.
    return new Response(JSON.stringify({ error: `offline and not in the model cache: ${url.pathname}` }), {
      status: 404,
      headers: { "Content-Type": "application/json" },
    });
  }
}
workbox.routing.registerRoute(
  ({ url, request }) => url.origin === self.location.origin && request.method === "GET" && MODEL_PATH.test(url.pathname),
  modelArtifact,
);
