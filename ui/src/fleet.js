// What the dashboard knows of the fleet: the objects of the watched kinds,
// kept current by one watch stream, and what the pages read from them.

import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, watch } from './api.js';

export const WATCHED = ['nodes', 'pods', 'deployments', 'daemonsets', 'jobs', 'events'];

export const keyOf = (object) => `${object.metadata.namespace || ''}/${object.metadata.name}`;

/**
 * The fleet's objects by kind, live. `state.objects.Node` is a Map of
 * key -> object. `connection` is 'connecting', 'live' or 'lost'. A stream
 * that ends or fails is started again; its snapshot replaces what was
 * held only once it is whole (at its BOOKMARK), so nothing blinks.
 */
export function useFleet(onUnauthorized) {
  const [snapshot, setSnapshot] = useState({ objects: {}, version: 0, connection: 'connecting', error: '' });
  const held = useRef({ objects: {}, version: 0 });
  useEffect(() => {
    const controller = new AbortController();
    let stopped = false;
    let scheduled = false;
    let connection = 'connecting';
    let error = '';
    // At most one render per animation frame however fast events come.
    const publish = () => {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(() => {
        scheduled = false;
        setSnapshot({ objects: held.current.objects, version: held.current.version, connection, error });
      });
    };
    const run = async () => {
      while (!stopped) {
        const incoming = {};
        let whole = false;
        try {
          await watch(
            WATCHED,
            (event) => {
              if (event.type === 'ERROR') throw new Error(event.object?.message || 'watch error');
              if (event.type === 'BOOKMARK') {
                whole = true;
                held.current = { objects: incoming, version: held.current.version + 1 };
                connection = 'live';
                error = '';
                publish();
                return;
              }
              // Changed in place (a copy per event would cost O(fleet));
              // the version tells the pages something changed.
              const object = event.object;
              const map = incoming[object.kind] || (incoming[object.kind] = new Map());
              if (event.type === 'DELETED') map.delete(keyOf(object));
              else map.set(keyOf(object), object);
              if (whole) {
                held.current = { objects: incoming, version: held.current.version + 1 };
                publish();
              }
            },
            controller.signal,
          );
          error = 'the server ended the watch';
        } catch (e) {
          if (stopped) return;
          if (e instanceof ApiError && e.status === 401) {
            onUnauthorized(e.message);
            return;
          }
          error = e.message || String(e);
        }
        connection = 'lost';
        publish();
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    };
    run();
    return () => {
      stopped = true;
      controller.abort();
    };
  }, []);
  return snapshot;
}

export const list = (objects, kind) => Array.from((objects[kind] || new Map()).values());

export function condition(status, type) {
  return (status?.conditions || []).find((c) => c.type === type);
}

/**
 * A device's state as an operator reads it: online, unreachable (its
 * connection was lost), lease expired (silent too long), not ready
 * (another reason), or unknown (never said hello).
 */
export function nodeState(node) {
  const ready = condition(node.status, 'Ready');
  if (!ready) return { state: 'unknown', text: 'unknown' };
  if (ready.status === 'True') return { state: 'online', text: 'online' };
  if (ready.reason === 'Unreachable') return { state: 'unreachable', text: 'unreachable', why: ready.message };
  if (ready.reason === 'LeaseExpired') return { state: 'lease-expired', text: 'lease expired', why: ready.message };
  return { state: 'not-ready', text: ready.reason || 'not ready', why: ready.message };
}

export const STATES = ['online', 'unreachable', 'lease-expired', 'not-ready', 'unknown'];

export const nodeOf = (pod) => pod.spec?.nodeName || '';

export const isDeleting = (object) => Boolean(object.metadata.deletionTimestamp);

/** The workload a replica belongs to: its owner's name. */
export const workloadOf = (pod) => pod.metadata.ownerReferences?.[0]?.name || '';

/**
 * Whether `labels` match a selector written as the CLI takes it:
 * `site=berlin,line!=3,gpu` (equality, inequality, existence).
 */
export function matchesSelector(labels, selector) {
  labels = labels || {};
  for (const part of selector.split(',').map((p) => p.trim()).filter(Boolean)) {
    let match;
    if ((match = /^([^!=]+)!=(.*)$/.exec(part))) {
      if (labels[match[1].trim()] === match[2].trim()) return false;
    } else if ((match = /^([^=]+)==?(.*)$/.exec(part))) {
      if (labels[match[1].trim()] !== match[2].trim()) return false;
    } else if (part.startsWith('!')) {
      if (part.slice(1) in labels) return false;
    } else if (!(part in labels)) {
      return false;
    }
  }
  return true;
}

/** A pod's phase as `get pods` shows it (a waiting reason wins). */
export function podPhase(pod) {
  if (isDeleting(pod)) return 'Terminating';
  const status = pod.status || {};
  const waiting = (status.containerStatuses || []).map((c) => c.state?.waiting?.reason).find(Boolean);
  if (waiting && waiting !== 'ContainerCreating') return waiting;
  return status.reason || status.phase || 'Pending';
}
