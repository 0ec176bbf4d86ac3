// The tunebook page: filters and sorts the tunes held in #tunebook-data, and shows them as cards.
// Thousands of tunes stay quick because little is done up front: cards are added a chunk at a
// time as the reader scrolls near the end of the list, and abcjs draws a card's sheet music only
// once the card comes into view.
"use strict";
(function () {
  const CHUNK = 40; // cards added at a time
  const book = JSON.parse(document.getElementById("tunebook-data").textContent);
  const fields = book.fields; // [{name, kind: "check" | "number" | "text" | "list"}], in display order
  const tunes = book.tunes;
  const byName = Object.fromEntries(fields.map((field) => [field.name, field]));
  const FORMAT_LABELS = { abc: ".abc", midi: ".mid", svg: "sheet music", wav: ".wav", ogg: "audio" }; // in messages
  const state = { query: "", sort: "number", descending: false, filters: {} };
  let shown = []; // the tunes passing the filters, in sort order
  let rendered = 0; // how many of them have cards

  const $ = (id) => document.getElementById(id);
  const label = (name) => name.replace(/_/g, " ");
  const plain = (text) => text.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  const valueOf = (tune, name) => (name === "number" || name === "title" ? tune[name] : tune.values[name]);

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child !== null) node.append(child);
    return node;
  }

  function formatValue(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") return value.toLocaleString("en", { maximumFractionDigits: 2 });
    return String(value);
  }

  // ---- controls ----

  function countValues(name) {
    const counts = new Map();
    for (const tune of tunes) {
      const value = formatValue(tune.values[name]);
      counts.set(value, (counts.get(value) || 0) + 1);
    }
    return [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  }

  function option(value, text) {
    return element("option", { value }, text);
  }

  function buildControls() {
    const sort = $("sort");
    sort.append(option("number", "number"), option("title", "title"));
    for (const field of fields) if (field.kind !== "list") sort.append(option(field.name, label(field.name)));
    const filters = $("filters");
    for (const field of fields) {
      if (field.kind === "check") {
        const passed = tunes.filter((tune) => tune.values[field.name] === true).length;
        const select = element("select", { "data-filter": field.name }, option("", "any"));
        select.append(option("pass", `✓ ${passed}`), option("fail", `✗ ${tunes.length - passed}`));
        filters.append(element("label", {}, label(field.name) + " ", select));
      } else if (field.kind === "text") {
        const select = element("select", { "data-filter": field.name }, option("", "any"));
        for (const [value, count] of countValues(field.name)) select.append(option(value, `${value} (${count})`));
        filters.append(element("label", {}, label(field.name) + " ", select));
      } else if (field.kind === "number") {
        const low = element("input", { type: "number", step: "any", placeholder: "min", "data-min": field.name });
        const high = element("input", { type: "number", step: "any", placeholder: "max", "data-max": field.name });
        filters.append(element("label", {}, label(field.name) + " ", low, " – ", high));
      }
    }
    $("controls").addEventListener("input", readControls);
    $("controls").addEventListener("change", readControls);
    $("controls").addEventListener("reset", () => setTimeout(readControls));
    $("controls").addEventListener("submit", (event) => event.preventDefault());
    $("direction").addEventListener("click", () => {
      state.descending = !state.descending;
      $("direction").textContent = state.descending ? "descending" : "ascending";
      apply();
    });
  }

  function readControls() {
    state.query = plain($("search").value.trim());
    state.sort = $("sort").value;
    state.filters = {};
    for (const select of document.querySelectorAll("[data-filter]")) {
      if (select.value) state.filters[select.dataset.filter] = { equals: select.value };
    }
    for (const input of document.querySelectorAll("[data-min], [data-max]")) {
      if (input.value === "" || Number.isNaN(input.valueAsNumber)) continue;
      const name = input.dataset.min || input.dataset.max;
      const bounds = (state.filters[name] = state.filters[name] || {});
      bounds[input.dataset.min ? "min" : "max"] = input.valueAsNumber;
    }
    apply();
  }

  function passes(tune) {
    if (state.query && !(tune.plainTitle ??= plain(tune.title)).includes(state.query)) return false;
    for (const [name, rule] of Object.entries(state.filters)) {
      const value = tune.values[name];
      const kind = byName[name].kind;
      if (kind === "check" && value !== (rule.equals === "pass")) return false;
      if (kind === "text" && formatValue(value) !== rule.equals) return false;
      if (kind === "number") {
        if (typeof value !== "number") return false;
        if (rule.min !== undefined && value < rule.min) return false;
        if (rule.max !== undefined && value > rule.max) return false;
      }
    }
    return true;
  }

  function compare(a, b) {
    const x = valueOf(a, state.sort);
    const y = valueOf(b, state.sort);
    const missing = (x === null || x === undefined) - (y === null || y === undefined);
    if (missing) return missing; // tunes without the value go last either way
    let order = 0;
    if (typeof x === "string") order = x.localeCompare(y);
    else if (x !== y) order = x < y ? -1 : 1;
    return (state.descending ? -order : order) || a.number - b.number;
  }

  // ---- the list ----

  function apply() {
    shown = tunes.filter(passes).sort(compare);
    rendered = 0;
    $("tunes").replaceChildren();
    addCards();
    watchEnd();
  }

  function addCards() {
    const cards = shown.slice(rendered, rendered + CHUNK).map(card);
    $("tunes").append(...cards);
    rendered += cards.length;
    const total = tunes.length.toLocaleString("en");
    $("count").textContent =
      `${shown.length.toLocaleString("en")} of ${total} tunes match` +
      (rendered < shown.length ? `; showing the first ${rendered.toLocaleString("en")}, more as you scroll` : "");
  }

  // Adds a chunk whenever the end of the list is within a screen or two of the view.
  const endWatcher = new IntersectionObserver(
    (entries) => {
      if (entries.some((entry) => entry.isIntersecting) && rendered < shown.length) {
        addCards();
        watchEnd(); // observing afresh reports again if the end is still near after this chunk
      }
    },
    { rootMargin: "0px 0px 1500px 0px" },
  );

  function watchEnd() {
    endWatcher.unobserve($("more"));
    endWatcher.observe($("more"));
  }

  // ---- one tune ----

  function problemText(problem) {
    return `No ${problem.formats.map((format) => FORMAT_LABELS[format] || format).join(", ")}: ${problem.message}`;
  }

  function card(tune) {
    const problems = tune.problems;
    const sheetProblem = problems.find((problem) => problem.formats.includes("svg"));
    const soundProblem = problems.find((problem) => problem.formats.includes("ogg"));
    const otherProblems = problems.filter((problem) => problem !== sheetProblem && problem !== soundProblem);
    const node = element(
      "article",
      { class: "tune", id: `tune-${tune.number}` },
      element("h2", {}, element("span", { class: "number" }, String(tune.number)), tune.title),
      facts(tune),
      checks(tune),
      messages(tune),
      element(
        "div",
        { class: "music" },
        // abcjs sizes the element it draws in by its parent's width: .paper, inside .music, whose width is capped
        sheetProblem ? element("p", { class: "problem" }, problemText(sheetProblem)) : element("div", { class: "paper" }),
      ),
      element("div", { class: "play" }, player(tune, soundProblem)),
      fileLinks(tune),
      ...otherProblems.map((problem) => element("p", { class: "problem" }, problemText(problem))),
      element("details", { class: "abc" }, element("summary", {}, "ABC"), element("pre", {}, tune.abc)),
    );
    if (!sheetProblem) musicWatcher.observe(node.querySelector(".music"));
    node.tune = tune;
    return node;
  }

  function facts(tune) {
    const items = fields
      .filter((field) => field.kind === "text" || field.kind === "number")
      .map((field) => element("span", {}, label(field.name) + " ", element("b", {}, formatValue(tune.values[field.name]))));
    return element("div", { class: "facts" }, ...items);
  }

  function checks(tune) {
    const badges = fields
      .filter((field) => field.kind === "check" && typeof tune.values[field.name] === "boolean")
      .map((field) => {
        const pass = tune.values[field.name];
        return element("span", { class: `check ${pass ? "pass" : "fail"}` }, `${pass ? "✓" : "✗"} ${label(field.name)}`);
      });
    return element("div", { class: "checks" }, ...badges);
  }

  function messages(tune) {
    const items = fields
      .filter((field) => field.kind === "list")
      .flatMap((field) => (tune.values[field.name] || []).map((item) => element("li", {}, `${label(field.name)}: ${item}`)));
    return items.length ? element("ul", { class: "messages" }, ...items) : null;
  }

  function player(tune, problem) {
    if (tune.files.ogg) {
      return element("audio", { controls: "", preload: "none", src: tune.files.ogg, title: `play ${tune.title}` });
    }
    return element("p", { class: "problem" }, problem ? problemText(problem) : "No audio: see the notes at the top");
  }

  function fileLinks(tune) {
    const links = Object.values(tune.files).map((file) => element("a", { href: file }, file.slice(file.lastIndexOf("."))));
    return element("nav", { class: "files" }, ...links);
  }

  // Draws sheet music with abcjs once a card is near the view; each card is drawn once.
  const musicWatcher = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        musicWatcher.unobserve(entry.target);
        drawMusic(entry.target.querySelector(".paper"), entry.target.closest(".tune").tune);
      }
    },
    { rootMargin: "300px 0px" },
  );

  function drawMusic(target, tune) {
    try {
      const drawn = ABCJS.renderAbc(target, tune.abc, { responsive: "resize" });
      const warnings = (drawn[0] && drawn[0].warnings) || [];
      if (warnings.length) {
        const texts = warnings.map((warning) => element("li", {}, new DOMParser().parseFromString(warning, "text/html").body.textContent));
        const summary = element("summary", {}, `abcjs: ${warnings.length} warning${warnings.length > 1 ? "s" : ""}`);
        target.after(element("details", { class: "warnings" }, summary, element("ul", {}, ...texts)));
      }
    } catch (error) {
      target.replaceChildren(element("p", { class: "problem" }, `abcjs could not draw this tune: ${error.message}`));
    }
    window.tunebook.firstMusicMs = window.tunebook.firstMusicMs || performance.now(); // for measuring load time
  }

  // One tune plays at a time.
  document.addEventListener(
    "play",
    (event) => {
      for (const audio of document.querySelectorAll("audio")) if (audio !== event.target) audio.pause();
    },
    true,
  );

  // ---- start ----

  if (book.header) {
    $("book-header").textContent = book.header;
    $("book-header").hidden = false;
  }
  if (book.notes.length) {
    $("notes").append(...book.notes.map((note) => element("li", {}, note)));
    $("notes").hidden = false;
  }
  apply();
  window.tunebook = { firstCardsMs: performance.now(), tunes: tunes.length }; // milliseconds since navigation
  setTimeout(buildControls); // counting every value for the filters can wait until the first tunes show
})();
