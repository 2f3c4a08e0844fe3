// The sum page: every submission of #sum-form sends {"type":"sum","id","input"}
// and puts a line at the top of #results, updated by the server's `sum` messages.
// Must not: compute or validate the sum itself (the daemon decides `invalid`).
'use strict';
(function () {
  const MAX_LINES = 500; // keep the page's memory flat however long it is used

  const form = document.getElementById('sum-form');
  const input = document.getElementById('number');
  const results = document.getElementById('results');

  let nextId = 1;
  const lines = new Map();   // id -> <li> still waiting for a final status
  const unsent = [];         // ids typed while disconnected, sent on reconnect
  const inflight = new Set(); // ids sent on the current connection

  const TEXT = { calculating: 'calculating', error: 'error', invalid: 'invalid input' };

  function setStatus(li, status, value, reason) {
    li.dataset.status = status;
    li.className = 'result ' + status;
    const span = li.querySelector('.value');
    span.textContent = value;
    if (reason) li.title = reason; else li.removeAttribute('title');
  }

  function addLine(id, text) {
    const li = document.createElement('li');
    li.dataset.id = String(id);
    li.dataset.input = text;
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = `∑(1..${text}) = `;
    const value = document.createElement('span');
    value.className = 'value';
    li.append(label, value);
    setStatus(li, 'calculating', TEXT.calculating);
    results.prepend(li);
    lines.set(id, li);
    while (results.children.length > MAX_LINES) {
      const old = results.lastElementChild;
      lines.delete(Number(old.dataset.id));
      inflight.delete(Number(old.dataset.id));
      old.remove();
    }
    return li;
  }

  function sendSum(id) {
    const li = lines.get(id);
    if (!li) return true;
    if (App.send({ type: 'sum', id, input: li.dataset.input })) {
      inflight.add(id);
      return true;
    }
    return false;
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    const id = nextId++;
    addLine(id, text);
    if (!sendSum(id)) unsent.push(id);
    input.value = '';
    input.focus();
  });

  App.on('sum', (msg) => {
    const id = Number(msg.id);
    const li = lines.get(id);
    if (!li) return;
    switch (msg.status) {
      case 'calculating':
        return;
      case 'done':
        setStatus(li, 'done', String(msg.result));
        break;
      case 'error':
        setStatus(li, 'error', TEXT.error, msg.reason);
        break;
      case 'invalid':
        setStatus(li, 'invalid', TEXT.invalid, msg.reason);
        break;
      default:
        return;
    }
    lines.delete(id);
    inflight.delete(id);
  });

  // The computing process belonged to the old connection: those lines will
  // never get an answer. Lines typed while disconnected are sent on reconnect.
  let lost = [];          // lines of the connection that went away
  let startedAt = null;   // the node's start time, from `hello`
  App.onClose(() => {
    for (const id of inflight) {
      const li = lines.get(id);
      if (li) {
        setStatus(li, 'error', TEXT.error, 'connection lost');
        lost.push(li);
      }
      lines.delete(id);
    }
    inflight.clear();
  });

  // Reconnected to a node that started again (heart restarted it): say so.
  App.on('hello', (msg) => {
    if (startedAt !== null && msg.started_at !== startedAt) {
      for (const li of lost) setStatus(li, 'error', TEXT.error, 'node restarted');
    }
    startedAt = msg.started_at;
    lost = [];
  });

  App.onOpen(() => {
    while (unsent.length > 0) {
      if (!sendSum(unsent[0])) break;
      unsent.shift();
    }
  });
})();
