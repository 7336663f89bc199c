import { useState } from 'preact/hooks';
import { api } from '../api.js';

/** Paste or upload manifests; the server answers as for `flotilla apply`. */
export function Apply() {
  const [textValue, setText] = useState('');
  const [source, setSource] = useState('pasted.yaml');
  const [dryRun, setDryRun] = useState(false);
  const [answer, setAnswer] = useState(null);
  const [busy, setBusy] = useState(false);
  const upload = async (event) => {
    const file = event.currentTarget.files?.[0];
    if (!file) return;
    setSource(file.name);
    setText(await file.text());
  };
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setAnswer(null);
    try {
      const result = await api('POST', '/api/v1/apply', { documents: [{ source, text: textValue }], dryRun, strict: false });
      setAnswer({ ok: true, ...result });
    } catch (e) {
      setAnswer({ ok: false, error: e.message, reason: e.reason });
    } finally {
      setBusy(false);
    }
  };
  return (
    <section>
      <h2>Apply</h2>
      <form onSubmit={submit} class="apply">
        <div class="toolbar">
          <label class="file">
            Upload a file <input type="file" accept=".yaml,.yml,.json" onChange={upload} />
          </label>
          <label class="check">
            <input type="checkbox" checked={dryRun} onChange={(e) => setDryRun(e.currentTarget.checked)} /> dry run (check
            only, store nothing)
          </label>
        </div>
        <textarea
          aria-label="manifest"
          spellcheck={false}
          placeholder={'apiVersion: apps/v1\nkind: Deployment\n...'}
          value={textValue}
          onInput={(e) => {
            setText(e.currentTarget.value);
            setSource('pasted.yaml');
          }}
        />
        <button type="submit" disabled={busy || !textValue.trim()}>
          {busy ? 'Applying…' : dryRun ? 'Check' : 'Apply'}
        </button>
      </form>
      {answer && !answer.ok && (
        <div class="card refused" role="alert" data-apply="refused">
          <strong>Refused{answer.reason ? ` (${answer.reason})` : ''}</strong>
          <pre class="apply-error">{answer.error}</pre>
        </div>
      )}
      {answer?.ok && (
        <div class="card" data-apply="applied">
          {answer.warnings.length > 0 && (
            <ul class="warnings">
              {answer.warnings.map((w) => (
                <li>warning: {w}</li>
              ))}
            </ul>
          )}
          <ul class="results">
            {answer.results.map((r) => (
              <li>
                {r.kind.toLowerCase()}/{r.name} {r.action}
                {dryRun ? ' (dry run)' : ''}
              </li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}
