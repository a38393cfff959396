// Ebb's inline snippet: paste it (minified: www/sdk/snippet.min.js) into the page, then
// call ebb.load(writeKey, options) and the rest at once. Until the module has loaded,
// each call is queued with its time and page, and returns a promise that settles when the
// real call does. Set the module's address in the last line.
(function (w, d, src) {
  var e = (w.ebb = w.ebb || {});
  if (e.q || e.consent) return;
  e.q = [];
  function stub(m) {
    return function () {
      var a = [].slice.call(arguments);
      var l = w.location;
      var p = { path: l.pathname, url: l.href, search: l.search, title: d.title, referrer: d.referrer };
      var t = new Date().toISOString();
      return new Promise(function (r, j) {
        e.q.push({ m: m, a: a, t: t, p: p, r: r, j: j });
      });
    };
  }
  var names = 'load identify track page group alias respond reset flush ready on off'.split(' ');
  for (var i = 0; i < names.length; i++) e[names[i]] = stub(names[i]);
  e.status = function () { return null; };
  e.consent = { state: function () { return null; } };
  names = ['grant', 'deny', 'withdraw'];
  for (i = 0; i < names.length; i++) e.consent[names[i]] = stub('consent.' + names[i]);
  var s = d.createElement('script');
  s.type = 'module';
  s.src = src;
  (d.head || d.documentElement).appendChild(s);
})(window, document, '/sdk/ebb.min.js');
