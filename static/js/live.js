// Live updates for every page: one EventSource on the user's channel. Pages listen for
// "studio:<event type>" DOM events on document. The connection state shows in the top bar.
// The browser reconnects by itself after a network error (sending Last-Event-ID); after an
// HTTP error (a proxy's 502 while the studio restarts) EventSource gives up for good, so we
// open a new one ourselves, backing off up to 30 s.
(function () {
  const url = document.body.dataset.userEvents;
  if (!url || !window.EventSource) return;
  const indicator = document.querySelector("[data-live-state]");
  const types = (document.body.dataset.liveEvents || "job,model,evaluation,registry,sweep").split(",");
  let retryDelay = 1000;
  let lastEventId = "";

  const setState = (state, title) => {
    if (!indicator) return;
    indicator.classList.remove("connected", "lost");
    if (state) indicator.classList.add(state);
    indicator.dataset.liveState = state || "connecting";
    indicator.title = title;
    indicator.setAttribute("aria-label", title);
  };

  function connect() {
    const target = lastEventId ? url + (url.includes("?") ? "&" : "?") + "lastEventId=" + encodeURIComponent(lastEventId) : url;
    const source = new EventSource(target);
    window.studioEvents = source;
    source.addEventListener("open", () => { retryDelay = 1000; setState("connected", "Live updates connected"); });
    source.addEventListener("error", () => {
      setState("lost", "Live updates lost, reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        window.setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 30000);
      }
    });
    types.forEach((type) => source.addEventListener(type, (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId;
      let data = {};
      try { data = JSON.parse(event.data); } catch (e) { return; }
      document.dispatchEvent(new CustomEvent("studio:" + type, { detail: data }));
    }));
  }

  setState("", "Live updates connecting…");
  connect();
})();
