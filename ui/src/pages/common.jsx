import { useEffect, useState } from 'preact/hooks';

/** A used-of-total bar; `text` says it in words. */
export function Bar({ used, total, text, label }) {
  const share = total > 0 && Number.isFinite(used) ? Math.min(1, used / total) : 0;
  const level = share > 0.9 ? 'high' : share > 0.7 ? 'mid' : 'low';
  return (
    <div class="bar" role="meter" aria-label={label} aria-valuemin="0" aria-valuemax={total} aria-valuenow={used}>
      <span class="bar-label">{label}</span>
      <span class="bar-track">
        <span class={`bar-fill ${level}`} style={{ width: `${(share * 100).toFixed(1)}%` }} />
      </span>
      <span class="bar-text">{text}</span>
    </div>
  );
}

/** A scrolling table with `headers` and the rows given as children. */
export function Table({ headers, children }) {
  return (
    <div class="scroll">
      <table>
        <thead>
          <tr>
            {headers.map((h) => (
              <th>{h}</th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}

/** Re-renders every `ms` (ages, "seconds ago"). */
export function useTick(ms) {
  const [, setTick] = useState(0);
  useEffect(() => {
    const timer = setInterval(() => setTick((t) => t + 1), ms);
    return () => clearInterval(timer);
  }, [ms]);
}

export function Labels({ labels }) {
  const entries = Object.entries(labels || {}).filter(([k]) => !k.startsWith('kubernetes.io/'));
  return (
    <span class="labels">
      {entries.map(([k, v]) => (
        <span class="label" key={k}>
          {k}={v}
        </span>
      ))}
    </span>
  );
}

/** A text box whose value lives in the URL's hash query, so a view can be linked. */
export function useQueryParam(query, name) {
  const value = query[name] || '';
  const set = (next) => {
    const [page, rest] = location.hash.replace(/^#\/?/, '').split('?');
    const params = new URLSearchParams(rest || '');
    if (next) params.set(name, next);
    else params.delete(name);
    const text = params.toString();
    history.replaceState(null, '', `#/${page || ''}${text ? `?${text}` : ''}`);
    dispatchEvent(new HashChangeEvent('hashchange'));
  };
  return [value, set];
}
