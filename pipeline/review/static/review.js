// catalog-tagger review page: decisions and explanations over the page's own JSON API (no framework, no CDN).
"use strict";
(() => {
  const items = () => [...document.querySelectorAll("article.item")];
  const reviewer = document.getElementById("reviewer");
  reviewer.value = localStorage.getItem("tagger.reviewer") || reviewer.value;
  reviewer.addEventListener("change", () => localStorage.setItem("tagger.reviewer", reviewer.value));
  let current = null;

  function select(el) {
    if (!el) return;
    if (current) current.classList.remove("current");
    current = el;
    el.classList.add("current");
    el.focus({ preventScroll: true });
    el.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    const open = items().filter((el) => !el.classList.contains("decided"));
    if (!open.length) return;
    const at = open.indexOf(current);
    select(open[Math.min(Math.max(at + step, 0), open.length - 1)] || open[0]);
  }

  function status(el, text, cls) {
    const s = el.querySelector(".status");
    s.textContent = text;
    s.className = "status " + (cls || "");
  }

  async function decide(el, action) {
    const body = { action, by: reviewer.value || null };
    if (action === "correct" || action === "merge") {
      const input = el.querySelector(`input[data-action=${action}]`);
      if (!input.value) {
        input.focus();
        status(el, `${action} needs a tag: type FACET:VALUE, then Enter`, "error");
        return;
      }
      body.tag = input.value.trim();
    }
    status(el, `${action}…`);
    const res = await fetch(`/api/items/${el.dataset.id}/decide`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const out = await res.json();
    if (!res.ok) { status(el, out.error || `HTTP ${res.status}`, "error"); return; }
    el.classList.add("decided");
    el.querySelector(".actions").remove();
    const to = out.decided_tag ? ` → ${out.decided_tag}` : "";
    status(el, `${out.decision}${to} by ${out.decided_by}`, "done");
    const left = items().filter((x) => !x.classList.contains("decided")).length;
    document.getElementById("count").textContent = left;
    if (el === current) move(1);
  }

  function mark(text, words) {
    // the model text with each word's weight as a green (for the tag) or red (against it) background
    const max = Math.max(1e-9, ...words.map((w) => Math.abs(w.weight)));
    const frag = document.createDocumentFragment();
    let last = 0;
    for (const w of words) {
      frag.append(text.slice(last, w.start));
      const m = document.createElement("mark");
      const a = (0.75 * Math.abs(w.weight) / max).toFixed(3);
      m.style.background = w.weight >= 0 ? `rgba(26,127,55,${a})` : `rgba(207,34,46,${a})`;
      m.title = w.weight.toFixed(3);
      m.textContent = text.slice(w.start, w.end);
      frag.append(m);
      last = w.end;
    }
    frag.append(text.slice(last));
    return frag;
  }

  async function explain(el) {
    const box = el.querySelector(".explain");
    box.hidden = false;
    box.textContent = "explaining…";
    const res = await fetch(`/api/items/${el.dataset.id}/explain`);
    const out = await res.json();
    box.textContent = "";
    if (!res.ok || out.error) { box.textContent = out.error || `HTTP ${res.status}`; box.classList.add("error"); return; }
    for (const tag of out.tags) {
      const line = document.createElement("div");
      line.className = "line";
      line.dataset.slug = tag.slug;
      const lbl = document.createElement("span");
      lbl.className = "lbl";
      lbl.textContent = `${tag.slug} ${tag.score.toFixed(2)}${out.predicted.includes(tag.slug) ? "" : " (not predicted)"}`;
      const words = document.createElement("span");
      words.append(mark(out.text, tag.words));
      if (tag.ngrams.length) {
        const ng = document.createElement("span");
        ng.className = "ngrams";
        ng.textContent = "TF-IDF: " + tag.ngrams.slice(0, 3).map(([t, v]) => `"${t}" ${v.toFixed(2)}`).join(", ");
        words.append(ng);
      }
      line.append(lbl, words);
      box.append(line);
    }
    const took = document.createElement("div");
    took.className = "took";
    took.textContent = `${out.tags.length} tag(s) explained in ${out.seconds.toFixed(2)} s`;
    box.append(took);
  }

  document.addEventListener("click", (ev) => {
    const el = ev.target.closest("article.item");
    if (!el) return;
    select(el);
    const b = ev.target.closest("button");
    if (!b) return;
    if (b.dataset.action) decide(el, b.dataset.action);
    else if ("explain" in b.dataset) explain(el);
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.target.matches("input.tag-input")) {
      if (ev.key === "Enter") decide(ev.target.closest("article.item"), ev.target.dataset.action);
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    if (ev.target.matches("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const keys = { a: "accept", r: "reject", p: "promote" };
    if (ev.key === "j") move(1);
    else if (ev.key === "k") move(-1);
    else if (current && keys[ev.key] && current.querySelector(`button[data-action=${keys[ev.key]}]`)) decide(current, keys[ev.key]);
    else if (current && (ev.key === "c" || ev.key === "m")) {
      const input = current.querySelector(`input[data-action=${ev.key === "c" ? "correct" : "merge"}]`);
      if (input) { ev.preventDefault(); input.focus(); }
    } else if (current && ev.key === "e" && current.querySelector("button[data-explain]")) explain(current);
    else return;
    ev.preventDefault();
  });

  move(0);
})();
