"""The report page's inline stylesheet and render-check script, kept out of the markup code.

Both are inlined into the page rather than linked, so the page stays one file that renders the
same offline; the script only counts images, so a page without JavaScript loses nothing else.
"""

CSS = """
:root{--ink:#1d2430;--dim:#5f6b7a;--line:#e3e5e8;--blue:#1f5fa8;--bg:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 20px 48px}
header,section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin:0 0 18px}
h1{margin:0 0 4px;font-size:26px}
h2{margin:0 0 12px;font-size:20px}
h3{margin:18px 0 8px;font-size:15px;color:var(--dim);text-transform:uppercase;letter-spacing:.04em}
.sub{margin:0 0 14px;color:var(--dim)}.sub b{color:var(--ink);font-weight:600}.dim{color:var(--dim);font-weight:400}
.status{font-size:13px;vertical-align:middle;padding:2px 9px;border-radius:999px;background:#eceff3;color:var(--dim)}
.status-done{background:#e3f4ea;color:#17703c}.status-failed,.status-interrupted{background:#fbe6e4;color:#a5281b}
.status-running{background:#fff4d6;color:#8a6100}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{flex:1 1 140px;border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .value{font-size:22px;font-weight:650}.card .value small{font-size:13px;color:var(--dim);font-weight:400}
.card .label{color:var(--dim);font-size:13px}
.stages{display:flex;height:16px;border-radius:4px;overflow:hidden;background:#eceff3}
.legend{list-style:none;padding:0;margin:6px 0 0;display:flex;flex-wrap:wrap;gap:14px;font-size:13px;color:var(--dim)}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
.notes{margin:12px 0 0;color:#8a6100;font-size:14px}
nav{display:flex;flex-wrap:wrap;gap:8px;margin:0 0 18px}
nav a{background:#fff;border:1px solid var(--line);border-radius:999px;padding:4px 12px;color:var(--blue);
text-decoration:none}
figure{margin:0}
img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption,.note{color:var(--dim);font-size:14px;margin-top:8px}
.missing{background:var(--bg);border:1px dashed #c9ced6;border-radius:8px;padding:14px;color:var(--dim)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{color:var(--dim);font-weight:600}
tr.pick td{background:#fff4d6}
.good{color:#17703c;font-weight:600}.fair{color:#8a6100}.poor{color:#a5281b;font-weight:600}
footer{color:var(--dim);font-size:13px;text-align:center}
"""

# Counts the images and those that failed to decode; a headless browser reads the result from
# the dumped DOM (tests/test_report_html.py), so a broken data URI cannot pass unnoticed.
RENDER_CHECK = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) { broken++; }
  }
  document.getElementById("render-check").textContent = "images=" + images.length + " broken=" + broken;
});
"""
