/* htsr report: sortable, filterable layer table and lazy per-layer drill-down (no dependencies). */
(function () {
  "use strict";
  var errors = window.__htsrErrors || [];
  var table = document.getElementById("layers");
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var detail = document.getElementById("detail");
  var filter = document.getElementById("filter");
  var only = document.getElementById("only");
  var shown = document.getElementById("shown");

  function cellKey(tr, i) {
    var td = tr.cells[i], v = td.getAttribute("data-v");
    if (v !== null) { var f = parseFloat(v); return isNaN(f) ? null : f; }
    return td.textContent;
  }
  function sortBy(i, dir) {
    var rows = Array.prototype.slice.call(tbody.rows);
    var idx = rows.map(function (tr, n) { return [cellKey(tr, i), n, tr]; });
    idx.sort(function (a, b) {
      var x = a[0], y = b[0];
      if (x === null && y === null) { return a[1] - b[1]; }
      if (x === null) { return 1; }            /* missing values last in both directions */
      if (y === null) { return -1; }
      var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return c !== 0 ? dir * c : a[1] - b[1];
    });
    var frag = document.createDocumentFragment();
    idx.forEach(function (e) { frag.appendChild(e[2]); });
    tbody.appendChild(frag);
    heads.forEach(function (th, j) {
      if (j === i) { th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending"); }
      else { th.removeAttribute("aria-sort"); }
    });
  }
  heads.forEach(function (th, i) {
    th.addEventListener("click", function () {
      sortBy(i, th.getAttribute("aria-sort") === "ascending" ? -1 : 1);
    });
  });

  function matcher(text) {
    text = text.trim();
    if (!text) { return function () { return true; }; }
    var m = /^\/(.*)\/$/.exec(text);
    if (m) {
      try { var re = new RegExp(m[1], "i"); return function (s) { return re.test(s); }; }
      catch (e) { return function () { return false; }; }
    }
    text = text.toLowerCase();
    return function (s) { return s.toLowerCase().indexOf(text) >= 0; };
  }
  function applyFilter() {
    var ok = matcher(filter.value), cls = only.value, n = 0;
    Array.prototype.forEach.call(tbody.rows, function (tr) {
      var vis = ok(tr.getAttribute("data-name")) && (!cls || tr.classList.contains(cls));
      tr.hidden = !vis;
      if (vis) { n += 1; }
    });
    shown.textContent = n + " of " + tbody.rows.length + " matrices shown";
  }
  filter.addEventListener("input", applyFilter);
  only.addEventListener("change", applyFilter);

  function show(tr) {
    var t = document.getElementById("L" + tr.getAttribute("data-key"));
    if (!t) { return; }
    detail.textContent = "";
    detail.appendChild(t.content.cloneNode(true));
    detail.hidden = false;
    Array.prototype.forEach.call(tbody.querySelectorAll("tr.selected"), function (r) { r.classList.remove("selected"); });
    tr.classList.add("selected");
  }
  tbody.addEventListener("click", function (e) {
    var tr = e.target.closest("tr");
    if (tr) { show(tr); detail.scrollIntoView({block: "nearest"}); }
  });
  tbody.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && e.target.tagName === "TR") { show(e.target); }
  });
  applyFilter();

  /* self-check for automated browser tests: window.htsrSelfTest() resolves to a summary
     (errors, images decoded or broken, including every drill-down's, sorting by alpha) */
  window.htsrSelfTest = function () {
    var out = {errors: errors.slice(), images: 0, broken: [], svgs: document.querySelectorAll("svg").length,
               templates: 0, sorted: false, rows: tbody.rows.length};
    var nav = performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
    if (nav) { out.dom_ms = nav.domContentLoadedEventEnd; out.load_ms = nav.loadEventEnd; }
    var imgs = Array.prototype.slice.call(document.images);
    Array.prototype.forEach.call(document.querySelectorAll("template"), function (t) {
      out.templates += 1;
      Array.prototype.forEach.call(t.content.querySelectorAll("img"), function (im) {
        var c = new Image(); c.src = im.getAttribute("src"); c.setAttribute("data-from", t.id); imgs.push(c);
      });
    });
    out.images = imgs.length;
    var col = heads.map(function (h) { return h.getAttribute("data-col"); }).indexOf("alpha");
    if (col >= 0) {
      sortBy(col, 1);
      var vals = Array.prototype.map.call(tbody.rows, function (tr) { return cellKey(tr, col); })
        .filter(function (v) { return v !== null; });
      out.sorted = vals.length > 0 && vals.every(function (v, i) { return i === 0 || vals[i - 1] <= v; });
      out.first_after_sort = tbody.rows[0].getAttribute("data-name");
    }
    if (tbody.rows.length) { show(tbody.rows[0]); out.detail_images = detail.querySelectorAll("img").length; }
    return Promise.all(imgs.map(function (im) {
      return (im.decode ? im.decode() : Promise.resolve()).then(function () {
        if (!im.naturalWidth) { out.broken.push(im.getAttribute("data-from") || "page"); }
      }, function () { out.broken.push(im.getAttribute("data-from") || "page"); });
    })).then(function () { return out; });
  };
}());
