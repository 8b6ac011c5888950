// The platform's pages work without this file; it only adds comfort (docs/architecture.md "Pages"):
// - <time datetime="..."> shown in the browser's time zone (the server writes UTC as the fallback);
// - the show-password button beside password fields (hidden without JavaScript);
// - Escape closes the header's phone menu (a <details>, which opens and closes without this file).
(function () {
  "use strict";
  var lang = document.documentElement.lang || "zh-CN";
  var full = new Intl.DateTimeFormat(lang, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", timeZoneName: "short"
  });
  var formats = {
    date: new Intl.DateTimeFormat(lang, { year: "numeric", month: "2-digit", day: "2-digit" }),
    time: new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" })
  };
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (isNaN(when.getTime())) return;
    el.title = el.textContent.trim();
    el.textContent = (formats[el.dataset.format] || full).format(when);
  });
  document.querySelectorAll("button.reveal[data-for]").forEach(function (btn) {
    var input = document.getElementById(btn.dataset.for);
    if (!input) return;
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var show = input.type === "password";
      input.type = show ? "text" : "password";
      btn.textContent = show ? btn.dataset.hide : btn.dataset.show;
      btn.setAttribute("aria-pressed", show ? "true" : "false");
      input.focus();
    });
  });
  document.querySelectorAll("details.nav-menu").forEach(function (menu) {
    menu.addEventListener("keydown", function (event) {
      if (event.key !== "Escape" || !menu.open) return;
      menu.open = false;
      menu.querySelector("summary").focus();
    });
  });
})();
