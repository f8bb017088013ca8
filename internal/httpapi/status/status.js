// alertd's status page refreshes itself in place: every few seconds it
// fetches the page again and swaps the <main> element, so nothing
// flickers and the scroll position stays. Without JavaScript the
// <noscript> meta refresh reloads the whole page instead. When alertd
// does not answer, a banner says so rather than show old news as new.
(function () {
  'use strict';
  var root = document.documentElement;
  var every = (Number(root.getAttribute('data-refresh')) || 10) * 1000;
  var swapped = 0;

  function stale(why) {
    var banner = document.getElementById('stale');
    banner.textContent = 'alertd did not answer (' + why + ') at ' +
      new Date().toLocaleTimeString() + ': this page shows what it said before.';
    banner.hidden = false;
  }

  function refresh() {
    if (document.hidden) { // nobody looks: ask again when someone does
      document.addEventListener('visibilitychange', refresh, { once: true });
      return;
    }
    fetch(location.href, { cache: 'no-store', headers: { Accept: 'text/html' } })
      .then(function (resp) {
        if (!resp.ok) { throw new Error('HTTP ' + resp.status); }
        return resp.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var fresh = doc.querySelector('main');
        if (!fresh) { throw new Error('no status in the answer'); }
        document.querySelector('main').replaceWith(document.adoptNode(fresh));
        document.title = doc.title;
        document.getElementById('stale').hidden = true;
        root.setAttribute('data-swapped', String(++swapped));
      })
      .catch(function (err) { stale(err.message || String(err)); })
      .then(function () { setTimeout(refresh, every); });
  }

  setTimeout(refresh, every);
})();
