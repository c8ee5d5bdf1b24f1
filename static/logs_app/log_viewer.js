// The live log viewer (full page and the job page's panel). One EventSource per viewer on
// /api/v1/jobs/<id>/logs: each "logs" event carries many lines {seq, timestamp, level, message}
// and its id is "job-<id>:<last seq>", so the browser's automatic reconnect (Last-Event-ID)
// resumes exactly. Lines are rendered once per animation frame; at most MAX_DOM lines stay in
// the DOM (older ones come back with "Load older" from the JSON history), so 100,000 lines
// stay responsive.
(function () {
  "use strict";
  const MAX_DOM = 5000;
  const OLDER_PAGE = 500;
  const RANK = { DEBUG: 0, INFO: 1, WARN: 2, ERROR: 3 };

  const pad = (n) => String(n).padStart(2, "0");
  const clock = (iso) => {
    const d = new Date(iso);
    return isNaN(d) ? "--:--:--" : pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  };

  function LogViewer(root) {
    this.root = root;
    this.jobId = root.dataset.jobId;
    this.streamUrl = root.dataset.streamUrl;
    this.historyUrl = root.dataset.historyUrl;
    this.panel = root.querySelector("[data-log-lines]");
    this.stateEl = root.querySelector("[data-log-state]");
    this.countersEl = root.querySelector("[data-log-counters]");
    this.olderBtn = root.querySelector("[data-log-older]");
    this.jumpBtn = root.querySelector("[data-log-jump]");
    this.levelSel = root.querySelector("[data-log-level]");
    this.searchEl = root.querySelector("[data-log-search]");
    this.lastSeq = 0;        // highest seq received (rendered or not)
    this.oldestSeq = null;   // seq of the first line in the DOM
    this.follow = true;      // auto-scroll; off while the user reads further up
    this.detached = false;   // older lines were loaded past the cap: live lines wait for "jump to latest"
    this.waiting = 0;
    this.pending = [];
    this.frame = 0;
    this.minRank = 0;
    this.query = "";
    this.source = null;
    this.retryDelay = 1000;
    this.ended = false;
    this.totals = null;
    this.seen = { lines: 0, warnings: 0, errors: 0 };
    this.bind();
    this.connect(false);
  }

  LogViewer.prototype.bind = function () {
    this.panel.addEventListener("scroll", () => {
      const gap = this.panel.scrollHeight - this.panel.scrollTop - this.panel.clientHeight;
      this.follow = gap < 40 && !this.detached;
      this.jumpBtn.hidden = this.follow;
    });
    this.jumpBtn.addEventListener("click", () => this.jumpToLatest());
    this.olderBtn.addEventListener("click", () => this.loadOlder());
    this.root.querySelector("[data-log-clear]").addEventListener("click", () => this.clear());
    this.levelSel.addEventListener("change", () => { this.minRank = RANK[this.levelSel.value] || 0; this.refilter(); });
    let timer = 0;
    this.searchEl.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { this.query = this.searchEl.value.toLowerCase(); this.refilter(); }, 150);
    });
  };

  LogViewer.prototype.setState = function (text, badge) {
    this.stateEl.textContent = text;
    this.stateEl.className = "badge " + (badge || "");
  };

  LogViewer.prototype.connect = function (resume) {
    if (this.source) this.source.close();
    let url = this.streamUrl;
    if (resume && this.lastSeq) url += "?lastEventId=" + encodeURIComponent("job-" + this.jobId + ":" + this.lastSeq);
    this.setState("connecting…", "pending");
    const source = new EventSource(url, { withCredentials: true });
    this.source = source;
    source.addEventListener("open", () => { this.retryDelay = 1000; this.setState("live", "running"); });
    source.addEventListener("logs", (event) => this.onLogs(event));
    source.addEventListener("end", (event) => this.onEnd(event));
    source.addEventListener("stream-error", () => { source.close(); this.setState("not allowed", "failed"); });
    source.addEventListener("error", () => {
      if (this.ended) return;
      if (source.readyState === EventSource.CLOSED) {
        // An HTTP error or 204 stops EventSource for good: check by the history, then retry ourselves.
        this.setState("reconnecting…", "pending");
        setTimeout(() => this.catchUpThenReconnect(), this.retryDelay);
        this.retryDelay = Math.min(this.retryDelay * 2, 30000);
      } else {
        this.setState("reconnecting…", "pending");  // the browser retries with Last-Event-ID
      }
    });
  };

  LogViewer.prototype.onLogs = function (event) {
    let data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    if (data.totals) this.totals = data.totals;
    if (data.prev_seq > this.lastSeq && this.lastSeq > 0) {
      // A gap (should not happen: the server fills them); resume from what we have.
      this.connect(true);
      return;
    }
    const fresh = data.lines.filter((line) => line.seq > this.lastSeq);
    if (!fresh.length) return;
    this.lastSeq = fresh[fresh.length - 1].seq;
    this.countSeen(fresh);
    if (this.detached) {
      this.waiting += fresh.length;
      this.jumpBtn.textContent = "Jump to latest (" + this.waiting + " new)";
      this.showCounters();
      return;
    }
    this.pending.push(...fresh);
    this.schedule();
  };

  LogViewer.prototype.onEnd = function (event) {
    this.ended = true;
    if (this.source) this.source.close();
    let status = "finished";
    try { status = JSON.parse(event.data).status || status; } catch (e) { /* keep the default */ }
    this.setState("ended: " + status, status);
  };

  LogViewer.prototype.catchUpThenReconnect = async function () {
    try {
      const response = await fetch(this.historyUrl + "&after=" + this.lastSeq + "&limit=1000", { credentials: "same-origin" });
      if (response.status === 401 || response.status === 403 || response.status === 404) {
        this.setState("unavailable (" + response.status + ")", "failed");
        return;
      }
      if (response.ok) {
        const page = await response.json();
        if (page.totals) this.totals = page.totals;
        this.onLogs({ data: JSON.stringify({ prev_seq: this.lastSeq, lines: page.results, totals: page.totals }) });
        if (!page.has_more && page.job_finished) {
          this.ended = true;
          this.setState("ended: " + page.job_status, page.job_status);
          return;
        }
      }
    } catch (e) { /* offline: try the stream again below */ }
    this.connect(true);
  };

  LogViewer.prototype.countSeen = function (lines) {
    for (const line of lines) {
      this.seen.lines += 1;
      if (line.level === "WARN") this.seen.warnings += 1;
      else if (line.level === "ERROR") this.seen.errors += 1;
    }
  };

  LogViewer.prototype.showCounters = function () {
    const t = this.totals || this.seen;
    const count = (n, word) => n + " " + word + (n === 1 ? "" : "s");
    this.countersEl.textContent = count(t.lines, "line") + " · " + count(t.warnings, "warning") + " · " + count(t.errors, "error");
  };

  LogViewer.prototype.schedule = function () {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  };

  LogViewer.prototype.lineNode = function (line) {
    const div = document.createElement("div");
    div.className = "log-line " + line.level;
    div.dataset.seq = line.seq;
    div.textContent = "[" + clock(line.timestamp) + "] [" + line.level + "] " + line.message;
    div.hidden = !this.visible(line.level, div.textContent);
    return div;
  };

  LogViewer.prototype.visible = function (level, text) {
    if ((RANK[level] || 0) < this.minRank) return false;
    return !this.query || text.toLowerCase().includes(this.query);
  };

  LogViewer.prototype.flush = function () {
    this.frame = 0;
    const lines = this.pending;
    this.pending = [];
    if (!lines.length) return;
    // Past the cap only the newest MAX_DOM lines matter: don't build nodes that would be dropped at once.
    const start = Math.max(0, lines.length - MAX_DOM);
    const fragment = document.createDocumentFragment();
    for (let i = start; i < lines.length; i++) fragment.appendChild(this.lineNode(lines[i]));
    this.panel.appendChild(fragment);
    let excess = this.panel.childElementCount - MAX_DOM;
    while (excess-- > 0) this.panel.firstElementChild.remove();
    const first = this.panel.firstElementChild;
    this.oldestSeq = first ? Number(first.dataset.seq) : null;
    this.olderBtn.hidden = !(this.oldestSeq > 1);
    if (this.follow) this.panel.scrollTop = this.panel.scrollHeight;
    this.showCounters();
  };

  LogViewer.prototype.loadOlder = async function () {
    const before = this.oldestSeq || this.lastSeq + 1;
    this.olderBtn.disabled = true;
    try {
      const response = await fetch(this.historyUrl + "&before=" + before + "&limit=" + OLDER_PAGE, { credentials: "same-origin" });
      if (!response.ok) return;
      const page = await response.json();
      const fragment = document.createDocumentFragment();
      for (const line of page.results) fragment.appendChild(this.lineNode(line));
      const height = this.panel.scrollHeight;
      this.panel.insertBefore(fragment, this.panel.firstChild);
      this.panel.scrollTop += this.panel.scrollHeight - height;  // keep the lines being read in place
      let excess = this.panel.childElementCount - MAX_DOM;
      if (excess > 0) {
        this.detached = true;
        this.follow = false;
        this.jumpBtn.hidden = false;
        while (excess-- > 0) this.panel.lastElementChild.remove();
      }
      if (page.results.length) this.oldestSeq = page.results[0].seq;
      this.olderBtn.hidden = !page.has_more;
    } finally {
      this.olderBtn.disabled = false;
    }
  };

  LogViewer.prototype.jumpToLatest = function () {
    if (this.detached) {
      // Reload the tail: drop what is shown and reconnect for the backlog of the latest lines.
      this.detached = false;
      this.waiting = 0;
      this.jumpBtn.textContent = "Jump to latest";
      this.panel.replaceChildren();
      this.lastSeq = 0;
      this.pending = [];
      this.ended = false;
      this.connect(false);
    }
    this.follow = true;
    this.jumpBtn.hidden = true;
    this.panel.scrollTop = this.panel.scrollHeight;
  };

  LogViewer.prototype.clear = function () {
    this.panel.replaceChildren();
    this.pending = [];
    this.oldestSeq = this.lastSeq + 1;
    this.olderBtn.hidden = !(this.lastSeq > 0);
  };

  LogViewer.prototype.refilter = function () {
    for (const node of this.panel.children) node.hidden = !this.visible(node.classList[1], node.textContent);
  };

  function start() {
    document.querySelectorAll("[data-log-viewer]").forEach((root) => {
      if (root.dataset.logViewerReady) return;
      root.dataset.logViewerReady = "1";
      root.logViewer = new LogViewer(root);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
