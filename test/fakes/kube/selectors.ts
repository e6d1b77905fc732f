// Label and field selectors as the API server parses them (apimachinery/pkg/labels, pkg/fields).
// Parse errors throw SelectorError; the HTTP layer answers them with 400 BadRequest.

export class SelectorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SelectorError';
  }
}

type LabelOp = 'eq' | 'neq' | 'in' | 'notin' | 'exists' | 'notexists';
interface LabelRequirement {
  key: string;
  op: LabelOp;
  values: string[];
}

/** Splits on commas that are not inside `in (...)` / `notin (...)` value sets. */
function splitTerms(selector: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < selector.length; i++) {
    const ch = selector[i];
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (ch === ',' && depth === 0) {
      terms.push(selector.slice(start, i));
      start = i + 1;
    }
  }
  terms.push(selector.slice(start));
  return terms.map((t) => t.trim()).filter((t) => t !== '');
}

const KEY = String.raw`[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?`;
const SET_TERM = new RegExp(String.raw`^(${KEY})\s+(in|notin)\s+\(([^)]*)\)$`);
const EQ_TERM = new RegExp(String.raw`^(${KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)$`);
const EXISTS_TERM = new RegExp(String.raw`^(!?)\s*(${KEY})$`);

export function parseLabelSelector(selector: string): LabelRequirement[] {
  return splitTerms(selector).map((term) => {
    let m = SET_TERM.exec(term);
    if (m) {
      const values = m[4]!.split(',').map((v) => v.trim());
      return { key: m[1]!, op: m[3] as 'in' | 'notin', values };
    }
    m = EQ_TERM.exec(term);
    if (m) return { key: m[1]!, op: m[3] === '!=' ? 'neq' : 'eq', values: [m[4]!] };
    m = EXISTS_TERM.exec(term);
    if (m) return { key: m[2]!, op: m[1] ? 'notexists' : 'exists', values: [] };
    throw new SelectorError(`unable to parse requirement: ${term}`);
  });
}

export function matchesLabels(
  reqs: readonly LabelRequirement[],
  labels: Readonly<Record<string, string>>,
): boolean {
  return reqs.every(({ key, op, values }) => {
    const has = Object.prototype.hasOwnProperty.call(labels, key);
    const value = labels[key];
    switch (op) {
      case 'eq':
      case 'in':
        return has && values.includes(value!);
      case 'neq':
      case 'notin':
        return !has || !values.includes(value!);
      case 'exists':
        return has;
      case 'notexists':
        return !has;
    }
  });
}

interface FieldRequirement {
  field: string;
  op: 'eq' | 'neq';
  value: string;
}

/**
 * `supported` lists the field labels the resource's storage registers (the real server answers
 * anything else with 400 "field label not supported"); `null` accepts any dotted path.
 */
export function parseFieldSelector(
  selector: string,
  supported: readonly string[] | null,
): FieldRequirement[] {
  return splitTerms(selector).map((term) => {
    const m = /^([^=!]+?)\s*(==|!=|=)\s*(.*)$/.exec(term);
    if (!m) throw new SelectorError(`invalid selector: '${selector}'; can't understand '${term}'`);
    const field = m[1]!;
    if (supported && !supported.includes(field))
      throw new SelectorError(`field label not supported: ${field}`);
    return { field, op: m[2] === '!=' ? 'neq' : 'eq', value: m[3]! };
  });
}

/** The string a field selector compares against; a missing field reads as "" (so `spec.nodeName=` finds unscheduled pods). */
export function fieldValue(obj: unknown, path: string): string {
  let node: unknown = obj;
  for (const part of path.split('.')) {
    if (typeof node !== 'object' || node === null) return '';
    node = (node as Record<string, unknown>)[part];
  }
  if (node === undefined || node === null) return '';
  return typeof node === 'object' ? JSON.stringify(node) : String(node);
}

export function matchesFields(reqs: readonly FieldRequirement[], obj: unknown): boolean {
  return reqs.every(({ field, op, value }) => (fieldValue(obj, field) === value) === (op === 'eq'));
}

export interface Selector {
  labels: LabelRequirement[];
  fields: FieldRequirement[];
}

export function parseSelector(
  labelSelector: string | undefined,
  fieldSelector: string | undefined,
  supportedFields: readonly string[] | null,
): Selector {
  return {
    labels: labelSelector ? parseLabelSelector(labelSelector) : [],
    fields: fieldSelector ? parseFieldSelector(fieldSelector, supportedFields) : [],
  };
}

export function matches(sel: Selector, obj: { metadata?: { labels?: Record<string, string> } }): boolean {
  return matchesLabels(sel.labels, obj.metadata?.labels ?? {}) && matchesFields(sel.fields, obj);
}
