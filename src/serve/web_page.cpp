#include "serve/web_page.h"

namespace lamina {

// Plain HTML, CSS and JavaScript: the conversation is kept in the page and sent whole with each
// message; the reply streams in through server-sent events read from fetch's body.
const char* chat_page_html() {
  return R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lamina chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;height:100vh}
#side{width:260px;padding:12px;background:#f3f3f3;border-right:1px solid #ddd;overflow:auto}
#side label{display:block;font-size:13px;margin-top:10px}
#side input,#side textarea{width:100%;box-sizing:border-box}
#main{flex:1;display:flex;flex-direction:column}
#log{flex:1;overflow:auto;padding:16px}
.msg{margin:8px 0;padding:8px 12px;border-radius:8px;white-space:pre-wrap;max-width:80%}
.user{background:#dbeafe;margin-left:auto}
.assistant{background:#eee}
.error{background:#fee2e2}
#form{display:flex;padding:12px;border-top:1px solid #ddd;gap:8px}
#input{flex:1;font-size:15px;padding:8px}
</style></head>
<body>
<div id="side">
<b>lamina</b> <span id="model"></span>
<label>System prompt<textarea id="system" rows="4"></textarea></label>
<label>Temperature <input id="temperature" type="number" step="0.1" min="0" max="2" value="0.7"></label>
<label>Top p <input id="top_p" type="number" step="0.05" min="0" max="1" value="1"></label>
<label>Max tokens <input id="max_tokens" type="number" min="1" value="256"></label>
<label>Seed <input id="seed" type="number" value=""></label>
<p><button id="clear" type="button">New conversation</button></p>
<p id="stats" style="font-size:12px;color:#555"></p>
</div>
<div id="main">
<div id="log"></div>
<form id="form"><input id="input" autocomplete="off" placeholder="Message">
<button id="send" type="submit">Send</button><button id="stop" type="button" disabled>Stop</button></form>
</div>
<script>
const $ = id => document.getElementById(id);
let history = [], controller = null;
fetch('v1/models').then(r => r.json()).then(j => { $('model').textContent = j.data[0].id; }).catch(() => {});
function add(role, text) {
  const d = document.createElement('div');
  d.className = 'msg ' + role; d.textContent = text; $('log').appendChild(d);
  $('log').scrollTop = $('log').scrollHeight; return d;
}
$('clear').onclick = () => { history = []; $('log').innerHTML = ''; };
$('stop').onclick = () => { if (controller) controller.abort(); };
$('form').onsubmit = async e => {
  e.preventDefault();
  const text = $('input').value.trim();
  if (!text || controller) return;
  $('input').value = '';
  add('user', text);
  history.push({role: 'user', content: text});
  const messages = ($('system').value ? [{role: 'system', content: $('system').value}] : []).concat(history);
  const body = {model: $('model').textContent, messages, stream: true,
    stream_options: {include_usage: true}, temperature: +$('temperature').value,
    top_p: +$('top_p').value, max_tokens: +$('max_tokens').value};
  if ($('seed').value !== '') body.seed = +$('seed').value;
  const out = add('assistant', '');
  controller = new AbortController(); $('send').disabled = true; $('stop').disabled = false;
  const t0 = performance.now();
  let reply = '';
  try {
    const r = await fetch('v1/chat/completions', {method: 'POST', signal: controller.signal,
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
    if (!r.ok) { const j = await r.json(); throw new Error(j.error ? j.error.message : r.statusText); }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + 2);
        if (!ev.startsWith('data: ')) continue;
        const data = ev.slice(6);
        if (data === '[DONE]') continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        if (j.choices.length && j.choices[0].delta.content) {
          reply += j.choices[0].delta.content; out.textContent = reply;
          $('log').scrollTop = $('log').scrollHeight;
        }
        if (j.usage) $('stats').textContent = j.usage.completion_tokens + ' tokens in ' +
          ((performance.now() - t0) / 1000).toFixed(1) + ' s';
      }
    }
    history.push({role: 'assistant', content: reply});
  } catch (err) {
    if (err.name !== 'AbortError') { out.className = 'msg error'; out.textContent = String(err.message || err); }
    else history.push({role: 'assistant', content: reply});
  } finally {
    controller = null; $('send').disabled = false; $('stop').disabled = true;
  }
};
</script>
</body></html>
)HTML";
}

}  // namespace lamina
