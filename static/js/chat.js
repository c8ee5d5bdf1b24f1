// Model page's Chat: the form is posted to its stream URL and the answer shown as it is generated (JSON lines:
// {"delta"} pieces, then {"turns", "history"}, or {"error"}). Without this script the form posts to the page.
// Nothing typed is lost: on any failure the message stays in its box and the reason is shown.
(function () {
  const form = document.querySelector("form[data-chat-stream]");
  if (!form || !window.fetch || !window.TextDecoder) return;
  const section = document.getElementById("chat");
  const list = section.querySelector("[data-chat-turns]");
  const errors = section.querySelector("[data-chat-errors]");
  const button = form.querySelector("button[type=submit]");
  const thinking = document.getElementById("chat-thinking");
  const box = form.elements.message;

  function turn(role, text) {
    const item = document.createElement("li");
    item.className = "chat-turn " + role;
    const who = document.createElement("span");
    who.className = "hint";
    who.textContent = role === "user" ? "You" : section.dataset.chatModel;
    const body = document.createElement("pre");
    body.className = "rendered-record";
    body.textContent = text;
    item.append(who, body);
    list.append(item);
    list.hidden = false;
    return body;
  }

  function showErrors(byField) {
    errors.replaceChildren();
    for (const [field, reason] of Object.entries(byField)) {
      const line = document.createElement("p");
      line.className = "field-error";
      line.setAttribute("role", "alert");
      line.dataset.errorField = field;
      line.textContent = (field === "model" ? "" : field + ": ") + reason;
      errors.append(line);
    }
  }

  async function send() {
    const body = new FormData(form);
    const asked = turn("user", box.value.trim());
    const answer = turn("assistant", "");
    let finished = false;
    try {
      const response = await fetch(form.dataset.chatStream, {
        method: "POST",
        body: body,
        headers: { "X-CSRFToken": body.get("csrfmiddlewaretoken") },
        credentials: "same-origin",
      });
      if (!response.ok) {
        const type = response.headers.get("Content-Type") || "";
        const data = type.includes("json") ? await response.json() : {};
        showErrors(data.errors || { model: "the studio answered " + response.status + ": try again" });
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        pending += decoder.decode(value || new Uint8Array(), { stream: !done });
        let end;
        while ((end = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, end).trim();
          pending = pending.slice(end + 1);
          if (!line) continue;
          const data = JSON.parse(line);
          if (data.delta !== undefined) answer.textContent += data.delta;
          else if (data.error !== undefined) showErrors({ model: data.error });
          else if (data.turns !== undefined) {
            answer.textContent = data.turns[data.turns.length - 1].content || "(an empty answer)";
            form.elements.history.value = data.history;
            box.value = "";
            finished = true;
            errors.replaceChildren();
            form.querySelector("[data-chat-new]").hidden = false;
          }
        }
        if (done) break;
      }
      if (!finished && !errors.childElementCount) showErrors({ model: "the answer was cut off: try again" });
    } catch (error) {
      showErrors({ model: "the studio could not be reached (" + error.message + "): try again" });
    } finally {
      if (!finished) {
        asked.parentElement.remove();
        answer.parentElement.remove();
        list.hidden = !list.childElementCount;
      }
      button.disabled = false;
      thinking.hidden = true;
      box.focus();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    thinking.hidden = false;
    send();
  });
})();
