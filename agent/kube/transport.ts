// How the agent's API calls travel. client-node 2.0 sends them through undici's `fetch`, whose WHATWG
// request/response machinery costs about 2.5 times the CPU of undici's own `request` for the same call
// (`npm run bench -- http-transport`: 323-465 µs against 108-184 µs per call), and every resize makes two
// calls (the status patch and an Event). This swaps only that layer, through client-node's public `httpApi`
// option: URLs, auth, the TLS dispatcher and (de)serialization stay client-node's. Watches stay on
// client-node's Watch: a watch on undici's `request` was tried and cost the same per event (8-11 µs).
import * as k8s from '@kubernetes/client-node';
import { request, type Dispatcher } from 'undici';

const USER_AGENT = 'resizelet';

/** A client-node HTTP library on undici's `request`: same dispatcher, headers, body and signal as fetch. */
export const undiciHttpLibrary: k8s.HttpLibrary = k8s.wrapHttpLibrary({
  async send(ctx: k8s.RequestContext): Promise<k8s.ResponseContext> {
    const body = ctx.getBody();
    if (body !== undefined && typeof body !== 'string') {
      // Form and multipart bodies are for endpoints this agent never calls.
      throw new Error(`unsupported request body type for ${ctx.getHttpMethod()} ${ctx.getUrl()}`);
    }
    const res = await request(ctx.getUrl(), {
      method: ctx.getHttpMethod() as Dispatcher.HttpMethod,
      headers: { 'user-agent': USER_AGENT, ...ctx.getHeaders() },
      body,
      signal: ctx.getSignal(),
      dispatcher: ctx.getDispatcher(),
    });
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(res.headers)) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    // Read the body once, whichever way the generated code asks for it.
    let bytes: Promise<Buffer> | undefined;
    const binary = (): Promise<Buffer> => (bytes ??= res.body.arrayBuffer().then((b) => Buffer.from(b)));
    return new k8s.ResponseContext(res.statusCode, headers, {
      binary,
      text: () => binary().then((b) => b.toString('utf8')),
      // No generated call this agent makes streams a response (watches go through client-node's Watch).
      stream: () => null,
    });
  },
});

/** kc.makeApiClient, but sending through undiciHttpLibrary. */
export function makeApiClient<T>(kc: k8s.KubeConfig, apiClientType: new (config: k8s.Configuration) => T): T {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('no active cluster in the kubeconfig');
  return new apiClientType(
    k8s.createConfiguration({
      baseServer: new k8s.ServerConfiguration(cluster.server, {}),
      authMethods: { default: kc },
      httpApi: undiciHttpLibrary,
    }),
  );
}
