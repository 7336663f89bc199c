import { useEffect, useRef, useState } from 'preact/hooks';
import { objectPath, text } from '../api.js';
import { keyOf, list, matchesSelector, nodeOf, podPhase, workloadOf } from '../fleet.js';
import { age, bytes, cores } from '../quantity.js';
import { Table, useQueryParam, useTick } from './common.jsx';

const MOST_ROWS = 1000;

export function Pods({ fleet, query }) {
  useTick(5000);
  const [node, setNode] = useQueryParam(query, 'node');
  const [selector, setSelector] = useQueryParam(query, 'selector');
  const [open, setOpen] = useQueryParam(query, 'pod');
  const pods = list(fleet.objects, 'Pod')
    .filter((p) => (!node || nodeOf(p) === node) && matchesSelector(p.metadata.labels, selector))
    .sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
  const opened = open ? fleet.objects.Pod?.get(open) : undefined;
  return (
    <section>
      <div class="toolbar">
        <h2>Pods</h2>
        <input
          class="filter"
          type="search"
          aria-label="node"
          placeholder="on node…"
          value={node}
          onInput={(e) => setNode(e.currentTarget.value)}
        />
        <input
          class="filter"
          type="search"
          aria-label="label selector"
          placeholder="filter by label: app=web"
          value={selector}
          onInput={(e) => setSelector(e.currentTarget.value)}
        />
      </div>
      {opened && <Logs pod={opened} onClose={() => setOpen('')} />}
      <Table headers={['Name', 'Phase', 'Node', 'Restarts', 'CPU', 'Memory', 'Message', 'Age']}>
        {pods.slice(0, MOST_ROWS).map((pod) => {
          const s = pod.status || {};
          const phase = podPhase(pod);
          return (
            <tr data-pod={pod.metadata.name} data-node={nodeOf(pod)} data-phase={phase} class={keyOf(pod) === open ? 'chosen' : ''}>
              <td>
                <a href="#" onClick={(e) => (e.preventDefault(), setOpen(keyOf(pod)))} title="logs">
                  {pod.metadata.namespace !== 'default' ? `${pod.metadata.namespace}/` : ''}
                  {pod.metadata.name}
                </a>
                {workloadOf(pod) && <div class="hint">{workloadOf(pod)}</div>}
              </td>
              <td>
                <span class={`badge phase-${phase}`}>{phase}</span>
              </td>
              <td>{nodeOf(pod) || <span class="hint">unscheduled</span>}</td>
              <td>{s.restartCount || 0}</td>
              <td>{s.usage ? cores(s.usage.cpuMillis / 1000) : '-'}</td>
              <td>{s.usage ? bytes(s.usage.memoryBytes) : '-'}</td>
              <td class="message">{s.message || ''}</td>
              <td>{age(pod.metadata.creationTimestamp)}</td>
            </tr>
          );
        })}
      </Table>
      {pods.length > MOST_ROWS && <p class="hint">Showing {MOST_ROWS} of {pods.length} pods: filter to see the others.</p>}
    </section>
  );
}

/**
 * The pod's output, asked of its device (`flotilla logs`): the last lines,
 * then, following, what was written since (the answer's offset header).
 */
function Logs({ pod, onClose }) {
  const [output, setOutput] = useState('');
  const [error, setError] = useState('');
  const [follow, setFollow] = useState(true);
  const offset = useRef(null);
  const view = useRef(null);
  const path = `${objectPath('pods', pod.metadata.namespace, pod.metadata.name)}/log`;
  useEffect(() => {
    offset.current = null;
    setOutput('');
    setError('');
  }, [path]);
  useEffect(() => {
    let stopped = false;
    let timer;
    const fetchMore = async () => {
      try {
        const query = offset.current === null ? '?tailLines=200' : `?offset=${offset.current}`;
        const answer = await text(path + query);
        if (stopped) return;
        const next = answer.headers.get('flotilla-log-offset');
        if (next !== null) offset.current = Number(next);
        if (answer.text) setOutput((o) => (o + answer.text).slice(-200000));
        setError('');
      } catch (e) {
        if (!stopped) setError(e.message);
      }
      if (!stopped && follow) timer = setTimeout(fetchMore, 1000);
    };
    fetchMore();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [path, follow]);
  useEffect(() => {
    if (follow && view.current) view.current.scrollTop = view.current.scrollHeight;
  }, [output, follow]);
  return (
    <div class="logs card" data-logs={pod.metadata.name}>
      <div class="toolbar">
        <strong>Logs of {pod.metadata.name}</strong>
        <span class="hint">on {nodeOf(pod) || 'no node'}</span>
        <label class="check">
          <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.currentTarget.checked)} /> follow
        </label>
        <button class="quiet" onClick={onClose}>
          Close
        </button>
      </div>
      {error && <p class="error">{error}</p>}
      <pre ref={view}>{output || (error ? '' : '(no output yet)')}</pre>
    </div>
  );
}
