// Models list: say when a model was created or changed elsewhere, without reloading under the reader.
(function () {
  const notice = document.querySelector("[data-new-models]");
  if (!notice) return;
  document.addEventListener("studio:model", () => { notice.hidden = false; });
})();
