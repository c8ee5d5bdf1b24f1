// Live updates for every page: one EventSource on the user's channel. Pages listen for
// "studio:<event type>" DOM events on document. The connection state shows in the top bar
// and the browser's EventSource reconnects by itself (sending Last-Event-ID).
(function () {
  const url = document.body.dataset.userEvents;
  if (!url || !window.EventSource) return;
  const indicator = document.querySelector("[data-live-state]");
  const setState = (state, title) => {
    if (!indicator) return;
    indicator.classList.remove("connected", "lost");
    if (state) indicator.classList.add(state);
    indicator.title = title;
  };
  const source = new EventSource(url);
  source.addEventListener("open", () => setState("connected", "Live updates connected"));
  source.addEventListener("error", () => setState("lost", "Live updates lost, reconnecting…"));
  source.onmessage = null;
  const forward = (type) => source.addEventListener(type, (event) => {
    let data = {};
    try { data = JSON.parse(event.data); } catch (e) { return; }
    document.dispatchEvent(new CustomEvent("studio:" + type, { detail: data }));
  });
  (document.body.dataset.liveEvents || "job,model,evaluation,notification").split(",").forEach(forward);
  window.studioEvents = source;
})();
