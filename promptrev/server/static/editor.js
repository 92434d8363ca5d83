// Edit page: line numbers beside the content, and a live check of what saving would say.
// The textarea stays the field the form sends (the page works without this script); the
// gutter follows its lines and scrolling, and lines with problems are marked in it. The
// check is the server's own save check (POST /edit/check), asked 400 ms after typing stops.
"use strict";

const CHECK_DELAY_MS = 400;

function setUpEditor(textarea) {
  const gutter = document.createElement("pre");
  gutter.className = "gutter";
  gutter.id = "edit-gutter";
  gutter.setAttribute("aria-hidden", "true");
  textarea.before(gutter);
  textarea.closest(".editor").classList.add("numbered");
  let marked = new Map(); // line → "error" | "warning"
  let shown = -1;

  function drawGutter() {
    const count = textarea.value.split("\n").length;
    if (count === shown && !drawGutter.dirty) return;
    shown = count;
    drawGutter.dirty = false;
    const lines = [];
    for (let i = 1; i <= count; i++) {
      const span = document.createElement("span");
      span.textContent = String(i);
      span.dataset.line = String(i);
      if (marked.has(i)) span.className = marked.get(i);
      lines.push(span, document.createTextNode("\n"));
    }
    gutter.replaceChildren(...lines);
    gutter.style.minWidth = (String(count).length + 2) + "ch";
    gutter.scrollTop = textarea.scrollTop;
  }

  const form = textarea.form;
  const status = document.getElementById("edit-check");
  let timer = null;
  let asked = 0;

  function describe(p) {
    return (p.line ? "line " + p.line + ": " : "") + p.message;
  }

  function showResult(result) {
    marked = new Map();
    result.warnings.forEach((w) => { if (w.line) marked.set(w.line, "warning"); });
    result.problems.forEach((p) => { if (p.line) marked.set(p.line, "error"); });
    drawGutter.dirty = true;
    drawGutter();
    const items = [];
    const head = document.createElement("strong");
    head.textContent = result.valid
      ? (result.warnings.length ? "Valid, with warnings" : "Valid: saving would be accepted")
      : "Not valid: saving would be refused";
    items.push(head);
    const list = document.createElement("ul");
    for (const [kind, found] of [["error", result.problems], ["warning", result.warnings]]) {
      for (const p of found) {
        const li = document.createElement("li");
        li.className = kind;
        li.textContent = describe(p);
        if (p.line) li.dataset.line = String(p.line);
        list.appendChild(li);
      }
    }
    if (list.children.length) items.push(list);
    status.className = "check " + (result.valid ? (result.warnings.length ? "warn" : "ok") : "bad");
    status.replaceChildren(...items);
  }

  async function check() {
    const mine = ++asked;
    const data = new FormData();
    for (const field of ["csrf_token", "kind", "name"]) {
      const input = form.elements[field];
      if (input) data.append(field, input.value);
    }
    data.append("text", textarea.value);
    try {
      const answer = await fetch(textarea.dataset.check, {
        method: "POST", body: data, credentials: "same-origin",
        headers: { "Accept": "application/json" },
      });
      if (mine !== asked) return; // a newer check is on its way
      if (!answer.ok) throw new Error("the check answered " + answer.status);
      showResult(await answer.json());
    } catch (err) {
      if (mine !== asked) return;
      status.className = "check unknown";
      status.textContent = "Could not check the content: " + err.message;
    }
  }

  function changed() {
    drawGutter();
    clearTimeout(timer);
    status.classList.add("stale");
    timer = setTimeout(check, CHECK_DELAY_MS);
  }

  textarea.addEventListener("input", changed);
  if (form.elements.name && form.elements.name.tagName === "INPUT" &&
      form.elements.name.type !== "hidden") {
    form.elements.name.addEventListener("input", changed);
  }
  textarea.addEventListener("scroll", () => { gutter.scrollTop = textarea.scrollTop; });
  // A line in the result list puts the cursor on that line.
  status.addEventListener("click", (event) => {
    const item = event.target.closest("li[data-line]");
    if (!item) return;
    const lines = textarea.value.split("\n");
    const n = Math.min(Number(item.dataset.line), lines.length);
    const start = lines.slice(0, n - 1).reduce((sum, l) => sum + l.length + 1, 0);
    textarea.focus();
    textarea.setSelectionRange(start, start + lines[n - 1].length);
  });
  drawGutter();
  check();
}

document.addEventListener("DOMContentLoaded", () => {
  const textarea = document.getElementById("edit-text");
  if (textarea && textarea.dataset.check) setUpEditor(textarea);
});
