import { useState } from 'preact/hooks';
import { modify } from '../api.js';
import { condition, keyOf, list } from '../fleet.js';
import { age } from '../quantity.js';
import { Table, useTick } from './common.jsx';

/** Template annotation `flotilla rollout restart` sets (rollout_cmd.rs). */
const RESTARTED_AT = 'flotilla.io/restartedAt';

/**
 * The rollout buttons: the same reads and writes as `flotilla rollout`
 * (GET the Deployment, change its spec, PUT it with its resourceVersion).
 */
const ACTIONS = {
  pause: (d) => {
    d.spec.paused = true;
  },
  resume: (d) => {
    d.spec.paused = false;
  },
  restart: (d) => {
    const metadata = (d.spec.template.metadata ||= {});
    (metadata.annotations ||= {})[RESTARTED_AT] = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  },
  undo: (d) => {
    const status = d.status || {};
    const previous = (status.history || [])
      .filter((r) => r.revision !== status.revision && r.state === 'Complete')
      .sort((a, b) => b.revision - a.revision)[0];
    if (!previous) throw new Error(`deployment "${d.metadata.name}" has no earlier complete revision to go back to`);
    d.spec.template = previous.template;
  },
};

export function Workloads({ fleet }) {
  useTick(5000);
  const [said, setSaid] = useState({});
  const act = async (deployment, action) => {
    const key = keyOf(deployment);
    setSaid((s) => ({ ...s, [key]: { busy: true, text: `${action}…` } }));
    try {
      await modify('deployments', deployment.metadata.namespace, deployment.metadata.name, ACTIONS[action]);
      setSaid((s) => ({ ...s, [key]: { text: `${action}: done` } }));
    } catch (e) {
      setSaid((s) => ({ ...s, [key]: { error: true, text: `${action}: ${e.message}` } }));
    }
  };
  const byName = (a, b) => keyOf(a).localeCompare(keyOf(b));
  const deployments = list(fleet.objects, 'Deployment').sort(byName);
  const daemonSets = list(fleet.objects, 'DaemonSet').sort(byName);
  const jobs = list(fleet.objects, 'Job').sort(byName);
  return (
    <section>
      <h2>Deployments</h2>
      {deployments.length === 0 ? (
        <p class="hint">None yet: apply one on the Apply page.</p>
      ) : (
        <Table headers={['Name', 'Ready', 'Rollout', 'Progress', 'Age', 'Actions']}>
          {deployments.map((d) => (
            <DeploymentRow deployment={d} said={said[keyOf(d)]} act={act} />
          ))}
        </Table>
      )}
      <h2>DaemonSets</h2>
      {daemonSets.length === 0 ? (
        <p class="hint">None.</p>
      ) : (
        <Table headers={['Name', 'Ready', 'Desired', 'Updated', 'Available', 'Age']}>
          {daemonSets.map((d) => {
            const s = d.status || {};
            return (
              <tr data-daemonset={d.metadata.name}>
                <td>{qualified(d)}</td>
                <td>
                  {s.numberReady || 0}/{s.desiredNumberScheduled || 0}
                </td>
                <td>{s.desiredNumberScheduled || 0}</td>
                <td>{s.updatedNumberScheduled || 0}</td>
                <td>{s.numberAvailable || 0}</td>
                <td>{age(d.metadata.creationTimestamp)}</td>
              </tr>
            );
          })}
        </Table>
      )}
      <h2>Jobs</h2>
      {jobs.length === 0 ? (
        <p class="hint">None.</p>
      ) : (
        <Table headers={['Name', 'Completions', 'Active', 'Failed', 'State', 'Age']}>
          {jobs.map((j) => {
            const s = j.status || {};
            const done = (s.conditions || []).find((c) => c.status === 'True');
            return (
              <tr data-job={j.metadata.name}>
                <td>{qualified(j)}</td>
                <td>
                  {s.succeeded || 0}/{j.spec?.completions ?? 1}
                </td>
                <td>{s.active || 0}</td>
                <td>{s.failed || 0}</td>
                <td title={done?.message}>{done ? done.type : s.active ? 'Running' : 'Pending'}</td>
                <td>{age(j.metadata.creationTimestamp)}</td>
              </tr>
            );
          })}
        </Table>
      )}
    </section>
  );
}

const qualified = (o) => (o.metadata.namespace && o.metadata.namespace !== 'default' ? `${o.metadata.namespace}/` : '') + o.metadata.name;

/** What the current rollout is doing, in the words of `rollout status`. */
function rolloutState(d) {
  const s = d.status || {};
  const wanted = d.spec?.replicas ?? 1;
  const current = (s.history || []).find((r) => r.revision === s.revision);
  const progressing = condition(s, 'Progressing');
  const failed = (s.history || []).filter((r) => r.state === 'Failed').sort((a, b) => b.revision - a.revision)[0];
  if (d.spec?.paused) return { state: 'paused', text: 'paused' };
  if ((s.observedGeneration || 0) < (d.metadata.generation || 0)) return { state: 'progressing', text: 'spec not yet observed' };
  if (current?.state === 'Complete' && (s.updatedReplicas || 0) >= wanted && (s.replicas || 0) === wanted) {
    const rolledBack = failed && failed.revision > s.revision;
    return rolledBack
      ? { state: 'rolled-back', text: `rolled back from revision ${failed.revision}: ${failed.reason || progressing?.message || ''}` }
      : { state: 'complete', text: 'complete' };
  }
  if (current?.state === 'Failed') return { state: 'failed', text: `failed: ${current.reason || progressing?.message || ''}` };
  return { state: 'progressing', text: progressing?.message || 'rolling out' };
}

function DeploymentRow({ deployment: d, said, act }) {
  const s = d.status || {};
  const wanted = d.spec?.replicas ?? 1;
  const rollout = rolloutState(d);
  const busy = said?.busy;
  const share = wanted > 0 ? Math.min(1, (s.updatedAvailableReplicas ?? s.availableReplicas ?? 0) / wanted) : 1;
  return (
    <tr data-deployment={d.metadata.name} data-rollout={rollout.state} data-revision={s.revision || 0}>
      <td>{qualified(d)}</td>
      <td>
        {s.readyReplicas || 0}/{wanted}
      </td>
      <td>
        <span class={`badge ${rollout.state}`}>revision {s.revision || '-'}</span>{' '}
        <span class="rollout-text">{rollout.text}</span>
      </td>
      <td>
        <div class="progress" title={`${s.updatedReplicas || 0} updated, ${s.availableReplicas || 0} available of ${wanted}`}>
          <span class="bar-track">
            <span class="bar-fill low" style={{ width: `${(share * 100).toFixed(0)}%` }} />
          </span>
          <span class="bar-text">
            {s.updatedReplicas || 0} updated · {s.availableReplicas || 0} available
          </span>
        </div>
      </td>
      <td>{age(d.metadata.creationTimestamp)}</td>
      <td class="actions">
        {d.spec?.paused ? (
          <button disabled={busy} onClick={() => act(d, 'resume')}>
            Resume
          </button>
        ) : (
          <button disabled={busy} onClick={() => act(d, 'pause')}>
            Pause
          </button>
        )}
        <button disabled={busy} onClick={() => act(d, 'restart')}>
          Restart
        </button>
        <button disabled={busy} onClick={() => act(d, 'undo')}>
          Undo
        </button>
        {said && <div class={said.error ? 'error' : 'hint'}>{said.text}</div>}
      </td>
    </tr>
  );
}
