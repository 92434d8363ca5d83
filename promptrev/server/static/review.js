// Change-request page: click a line number of a diff to comment on that line.
// The file's comment form (which works without script: type a line number) moves under
// the clicked line, GitHub style; Cancel puts it back. Served from the package, no CDN.
"use strict";

function openLineComment(section, form, home, cell) {
  const line = cell.dataset.line;
  const row = cell.closest("tr");
  let formRow = section.querySelector("tr.comment-form-row");
  if (!formRow) {
    formRow = document.createElement("tr");
    formRow.className = "comment-form-row";
    const td = document.createElement("td");
    td.colSpan = 4;
    formRow.appendChild(td);
  }
  section.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  // Under the line and the comments already on it.
  let after = row;
  const next = row.nextElementSibling;
  if (next && next.classList.contains("line-comments")) after = next;
  after.after(formRow);
  formRow.dataset.line = line;
  formRow.firstChild.appendChild(form);
  form.classList.add("inline-open");
  form.elements.line.value = line;
  form.elements.body.placeholder = "Comment on line " + line;
  form.querySelector(".line-cancel").hidden = false;
  form.elements.body.focus();
}

function closeLineComment(section, form, home) {
  const formRow = section.querySelector("tr.comment-form-row");
  home.appendChild(form);
  form.classList.remove("inline-open");
  form.elements.line.value = "";
  form.elements.body.placeholder = "Comment on this file";
  form.querySelector(".line-cancel").hidden = true;
  section.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
  if (formRow) formRow.remove();
}

function setUpSection(section) {
  const form = section.querySelector("form.line-comment-form");
  if (!form) return;
  // Where the form lives when no line is chosen.
  const home = document.createElement("div");
  home.className = "line-comment-home";
  form.before(home);
  home.appendChild(form);
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "line-cancel";
  cancel.textContent = "Cancel";
  cancel.hidden = true;
  form.appendChild(cancel);
  cancel.addEventListener("click", () => closeLineComment(section, form, home));
  section.querySelectorAll("table.sbs td.no[data-line]").forEach((cell) => {
    cell.classList.add("commentable");
    cell.tabIndex = 0;
    cell.setAttribute("role", "button");
    cell.title = "Comment on line " + cell.dataset.line;
  });
  section.addEventListener("click", (event) => {
    const cell = event.target.closest("td.no.commentable");
    if (cell && section.contains(cell)) openLineComment(section, form, home, cell);
  });
  section.addEventListener("keydown", (event) => {
    const cell = event.target.closest && event.target.closest("td.no.commentable");
    if (cell && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      openLineComment(section, form, home, cell);
    } else if (event.key === "Escape" && form.classList.contains("inline-open")) {
      closeLineComment(section, form, home);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("section.change").forEach(setUpSection);
});
