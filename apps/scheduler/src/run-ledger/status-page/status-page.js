// The status page's script (served inline in GET /, admitted by its hash in the page's CSP).
// Plain ES2017 for the browser, no modules, no build step. It holds no data itself: it fetches
// `api/runs` at once and then every REFRESH_MS, and puts every value (dates, environment names,
// errors come from messages anyone on the stream can publish) into the page only as text
// (`textContent`, `title`, `dataset`), never as markup.
(function () {
  'use strict';
  var REFRESH_MS = 5000;
  var TIMEOUT_MS = 10000;
  var STATES = ['queued', 'running', 'up_for_retry', 'success', 'failed', 'superseded'];
  var FINISHED = ['success', 'failed', 'superseded'];
  var grid = document.getElementById('grid');
  var updated = document.getElementById('updated');
  var details = document.getElementById('details');
  var runs = [];
  var shape = '';
  var selected = null; // { date, env }: env null for the dump
  var shown = new WeakMap(); // cell -> the text it shows

  function own(object, key) {
    return object && typeof object === 'object' && Object.prototype.hasOwnProperty.call(object, key) ? object[key] : undefined;
  }
  function stepOf(run, env) {
    var step = env === null ? run.dump : own(run.loads, env);
    return step && typeof step === 'object' ? step : undefined;
  }
  function classOf(step) {
    if (!step) return 'none';
    return STATES.indexOf(step.state) >= 0 ? step.state : 'unknown';
  }
  function finished(step) {
    return FINISHED.indexOf(step.state) >= 0;
  }
  // Finished: endedAt - startedAt. Running: so far. Otherwise none.
  function elapsed(step) {
    var start = Date.parse(step.startedAt);
    var end = finished(step) ? Date.parse(step.endedAt) : step.state === 'running' ? Date.now() : NaN;
    return isFinite(start) && isFinite(end) ? Math.max(0, end - start) : undefined;
  }
  function pad(n) {
    return (n < 10 ? '0' : '') + n;
  }
  function duration(ms) {
    if (ms === undefined) return '';
    if (ms < 1000) return Math.round(ms) + 'ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + 's';
    var minutes = Math.floor(ms / 60000);
    if (minutes < 60) return minutes + 'm ' + pad(Math.floor(ms / 1000) % 60) + 's';
    return Math.floor(minutes / 60) + 'h ' + pad(minutes % 60) + 'm';
  }
  function time(iso) {
    return String(iso).replace('T', ' ').replace('Z', ' UTC');
  }
  function size(n) {
    var units = ['B', 'KB', 'MB', 'GB', 'TB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
  }
  function label(state) {
    return String(state).replace(/_/g, ' ');
  }
  // A message that came again after its worker died: the delivery of the try shown.
  function redelivered(step) {
    return typeof step.delivery === 'number' && step.delivery > 1;
  }
  // A load a `db-fanout reload` asked for: the request's stream sequence.
  function reloadOf(step) {
    return typeof step.reloadSequence === 'number' && step.reloadSequence > 0 ? step.reloadSequence : 0;
  }
  function meta(step) {
    var parts = [];
    var ms = elapsed(step);
    if (ms !== undefined) parts.push(duration(ms) + (step.state === 'running' ? '\u2026' : ''));
    if (step.attempts > 1) parts.push(step.attempts + ' tries');
    if (redelivered(step)) parts.push('delivery ' + step.delivery);
    if (reloadOf(step)) parts.push('reload #' + reloadOf(step));
    return parts.join(' \u00b7 ');
  }
  // The facts of one step, for its title (hover) and the details line (click).
  function facts(date, env, step) {
    var out = [date + ' \u00b7 ' + (env === null ? 'dump' : env) + ' \u00b7 ' + String(step.state)];
    if (step.attempts) out.push('attempts: ' + step.attempts);
    if (redelivered(step)) out.push('delivery: ' + step.delivery + ' (the message came again after its worker stopped)');
    if (reloadOf(step)) out.push('reload: #' + reloadOf(step) + ' (asked for by db-fanout reload)');
    if (step.startedAt) out.push('started: ' + time(step.startedAt));
    if (step.endedAt && finished(step)) out.push('ended: ' + time(step.endedAt));
    var ms = elapsed(step);
    if (ms !== undefined) out.push((finished(step) ? 'took: ' : 'running for: ') + duration(ms));
    if (typeof step.rows === 'number') out.push('rows: ' + step.rows.toLocaleString('en-US'));
    if (typeof step.bytes === 'number') out.push('bytes: ' + size(step.bytes));
    if (step.snapshotId) out.push('snapshot: ' + step.snapshotId);
    if (step.location) out.push('location: ' + step.location);
    return out;
  }
  // SCHEMA_DRIFT=common-columns: what a load left out, as [what, names] for each list that has any.
  var DRIFT = [['skippedTables', 'skipped tables', 'table skipped', 'tables skipped'], ['leftOutColumns', 'left-out columns', 'column left out', 'columns left out'], ['defaultedColumns', 'defaulted columns', 'column defaulted', 'columns defaulted'], ['unsetSequences', 'sequences left unset', 'sequence left unset', 'sequences left unset']];
  function driftOf(step) {
    var drift = own(step, 'drift');
    return DRIFT.map(function (kind) {
      var names = own(drift, kind[0]);
      return { kind: kind, names: Array.isArray(names) ? names.map(String) : [] };
    }).filter(function (entry) { return entry.names.length > 0; });
  }
  // In the cell: how many of each, e.g. "drift: 1 column left out".
  function driftSummary(step) {
    var counts = driftOf(step).map(function (entry) { return entry.names.length + ' ' + (entry.names.length === 1 ? entry.kind[2] : entry.kind[3]); });
    return counts.length ? 'drift: ' + counts.join(', ') : '';
  }
  // In the title and the details: every name, e.g. "left-out columns: public.products.\"attrs\"".
  function driftLines(step) {
    return driftOf(step).map(function (entry) { return entry.kind[1] + ': ' + entry.names.join(', '); });
  }
  function errorOf(step) {
    return step.error === undefined || step.error === null ? '' : String(step.error);
  }
  function span(className, text) {
    var node = document.createElement('span');
    node.className = className;
    node.textContent = text;
    return node;
  }
  function th(text, scope) {
    var node = document.createElement('th');
    node.scope = scope;
    node.textContent = text;
    return node;
  }
  function isSelected(date, env) {
    return selected !== null && selected.date === date && selected.env === env;
  }

  // Updates a cell in place (same element: an open tooltip or the keyboard focus survive a refresh).
  function fill(td, date, env, step) {
    var cls = 'step s-' + classOf(step) + (step && isSelected(date, env) ? ' selected' : '');
    if (td.className !== cls) td.className = cls;
    var state = step ? String(step.state) : 'none';
    if (td.dataset.state !== state) td.dataset.state = state;
    var text = step ? label(step.state) : '\u2013';
    var small = step ? meta(step) : '';
    var drift = step ? driftSummary(step) : '';
    if (shown.get(td) !== text + '\n' + small + '\n' + drift) {
      shown.set(td, text + '\n' + small + '\n' + drift);
      td.replaceChildren(span('state', text));
      if (small) td.appendChild(span('meta', small));
      if (drift) td.appendChild(span('drift', drift));
    }
    var title = step ? facts(date, env, step).concat(driftLines(step).map(function (line) { return 'drift, ' + line; })).join('\n') + (errorOf(step) ? '\nerror: ' + errorOf(step) : '') : '';
    if (td.title !== title) td.title = title;
    if (step) {
      td.tabIndex = 0;
      td.setAttribute('role', 'button');
      td.setAttribute('aria-pressed', String(isSelected(date, env)));
    } else {
      td.removeAttribute('tabindex');
      td.removeAttribute('role');
      td.removeAttribute('aria-pressed');
    }
  }

  function environmentsOf(list) {
    var names = new Set();
    list.forEach(function (run) {
      if (run.loads && typeof run.loads === 'object') Object.keys(run.loads).forEach(function (name) { names.add(name); });
    });
    return Array.from(names).sort();
  }

  function build(environments) {
    var table = document.createElement('table');
    var head = document.createElement('tr');
    head.appendChild(th('date', 'col'));
    head.appendChild(th('dump', 'col'));
    environments.forEach(function (env) { head.appendChild(th(env, 'col')); });
    table.createTHead().appendChild(head);
    var body = table.createTBody();
    runs.forEach(function (run) {
      var tr = document.createElement('tr');
      tr.dataset.date = run.date;
      tr.appendChild(th(run.date, 'row'));
      var dump = document.createElement('td');
      dump.dataset.step = 'dump';
      tr.appendChild(dump);
      environments.forEach(function (env) {
        var td = document.createElement('td');
        td.dataset.env = env;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    grid.replaceChildren(table);
  }

  function render() {
    if (runs.length === 0) {
      shape = '';
      var empty = document.createElement('p');
      empty.id = 'empty';
      empty.textContent = 'No runs yet: they appear here once the first trigger is published.';
      grid.replaceChildren(empty);
      renderDetails();
      return;
    }
    var environments = environmentsOf(runs);
    var nextShape = JSON.stringify([runs.map(function (run) { return run.date; }), environments]);
    if (nextShape !== shape) {
      var focused = keyOf(document.activeElement);
      build(environments);
      shape = nextShape;
      if (focused) {
        var again = cellFor(focused.date, focused.env);
        if (again) again.focus();
      }
    }
    var rows = grid.querySelectorAll('tbody tr');
    runs.forEach(function (run, i) {
      var row = rows[i];
      var ths = row.querySelectorAll('th');
      ths[0].title = run.triggeredAt ? 'triggered: ' + time(run.triggeredAt) : '';
      Array.prototype.forEach.call(row.querySelectorAll('td'), function (td) {
        var env = td.dataset.step === 'dump' ? null : td.dataset.env;
        fill(td, run.date, env, stepOf(run, env));
      });
    });
    renderDetails();
  }

  function keyOf(node) {
    if (!node || node.tagName !== 'TD' || !grid.contains(node)) return null;
    var row = node.parentNode;
    return { date: row.dataset.date, env: node.dataset.step === 'dump' ? null : node.dataset.env };
  }
  function cellFor(date, env) {
    var found = null;
    Array.prototype.forEach.call(grid.querySelectorAll('td'), function (td) {
      var key = keyOf(td);
      if (key && key.date === date && key.env === env) found = td;
    });
    return found;
  }

  function renderDetails() {
    var run = selected && runs.filter(function (r) { return r.date === selected.date; })[0];
    var step = run && stepOf(run, selected.env);
    if (!step) {
      details.className = 'empty';
      details.replaceChildren('Click a cell for its details.');
      return;
    }
    details.className = '';
    var line = document.createElement('div');
    line.className = 'facts';
    line.textContent = facts(selected.date, selected.env, step).join(' \u00b7 ');
    details.replaceChildren(line);
    var drift = driftLines(step);
    if (drift.length) {
      var list = document.createElement('ul');
      list.className = 'drift';
      list.setAttribute('aria-label', 'schema drift (SCHEMA_DRIFT=common-columns): what this load left out');
      drift.forEach(function (text) {
        var item = document.createElement('li');
        item.textContent = text;
        list.appendChild(item);
      });
      details.appendChild(list);
    }
    if (errorOf(step)) {
      var pre = document.createElement('pre');
      pre.className = 'error';
      pre.textContent = 'error: ' + errorOf(step);
      details.appendChild(pre);
    }
  }

  function select(td) {
    var key = keyOf(td);
    if (!key) return;
    var run = runs.filter(function (r) { return r.date === key.date; })[0];
    if (!run || !stepOf(run, key.env)) return;
    selected = isSelected(key.date, key.env) ? null : key;
    render();
  }
  grid.addEventListener('click', function (event) {
    select(event.target.closest('td'));
  });
  grid.addEventListener('keydown', function (event) {
    if (event.key !== 'Enter' && event.key !== ' ') return;
    event.preventDefault();
    select(event.target.closest('td'));
  });

  function valid(run) {
    return run && typeof run === 'object' && typeof run.date === 'string' && run.dump && typeof run.dump === 'object';
  }
  async function refresh() {
    var abort = new AbortController();
    var timer = setTimeout(function () { abort.abort(); }, TIMEOUT_MS);
    try {
      var response = await fetch('api/runs', { cache: 'no-store', headers: { Accept: 'application/json' }, signal: abort.signal });
      if (!response.ok) throw new Error('HTTP ' + response.status);
      var body = await response.json();
      if (!Array.isArray(body)) throw new Error('unexpected answer');
      runs = body.filter(valid).sort(function (a, b) { return a.date < b.date ? 1 : a.date > b.date ? -1 : 0; });
      render();
      updated.className = '';
      updated.textContent = 'updated ' + new Date().toLocaleTimeString() + ', refreshes every ' + REFRESH_MS / 1000 + 's';
    } catch (error) {
      var reason = abort.signal.aborted ? 'no answer in ' + TIMEOUT_MS / 1000 + 's' : error && error.message ? error.message : String(error);
      updated.className = 'stale';
      updated.textContent = 'could not refresh (' + reason + '), retrying every ' + REFRESH_MS / 1000 + 's';
    } finally {
      clearTimeout(timer);
      setTimeout(refresh, REFRESH_MS);
    }
  }
  void refresh();
})();
