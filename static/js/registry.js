// Registry name page: an alias moved (here or elsewhere) → say so, with a reload link; the page
// itself is rendered on the server, so a reload shows the new holder and the history row.
(function () {
  const notice = document.querySelector("[data-registry-live]");
  if (!notice) return;
  const name = document.title.split(" — ")[0];
  document.addEventListener("studio:registry", (event) => {
    const data = event.detail || {};
    if (data.action !== "alias_moved" || data.name !== name) return;
    const cell = document.querySelector('[data-alias="' + data.alias + '"]');
    if (cell) cell.textContent = "v" + data.to_version + " (just moved from " + (data.from_version ? "v" + data.from_version : "nothing") + ")";
    notice.hidden = false;
  });
})();
