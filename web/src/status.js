// The status line, the dismissable messages and the model badge.
import { $, state } from './state.js';

export function setStatus(phase, text) {
  state.phase = phase;
  const el = $('status');
  el.dataset.phase = phase;
  el.textContent = text;
}

export function showMessage(key, text, level = 'error') {
  state.messages.set(key, { text, level });
  renderMessages();
}

export function clearMessage(key) {
  if (state.messages.delete(key)) renderMessages();
}

function renderMessages() {
  const ul = $('messages');
  ul.replaceChildren(...[...state.messages].map(([key, { text, level }]) => {
    const li = document.createElement('li');
    li.dataset.key = key;
    li.className = level;
    const span = document.createElement('span');
    span.textContent = text;
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'icon';
    close.title = 'Dismiss';
    close.setAttribute('aria-label', 'Dismiss message');
    close.textContent = '×';
    close.addEventListener('click', () => clearMessage(key));
    li.append(span, close);
    return li;
  }));
}

export function markModel(ok, text) {
  const badge = $('model-badge');
  badge.textContent = text;
  badge.dataset.state = ok ? 'ok' : 'bad';
}
