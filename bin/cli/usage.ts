// The help text, kept apart so tests and docs can show exactly what users see.

export const CLI_USAGE = `usage: resizelet <command> [flags]        (also: kubectl resizelet <command> [flags])

Change a running pod's CPU and memory without restarting it.

commands:
  resize POD [-n NS] [-c CONTAINER] [--requests cpu=500m,memory=256Mi] [--limits cpu=1,memory=512Mi]
         [--wait] [--timeout 60s]
      Write a resize request for one container (one merge patch: the request and a Proposed status).
      -c may be left out when the pod has one container. Only cpu and memory can be resized.
      --wait follows the status until the agent answers: Completed exits 0, Rejected exits 1 (with the
      agent's message), no answer within --timeout (default 60s) exits 2. The request stays in place.

  status POD [-n NS] | status [-n NS] | status -A
      A table per container: spec requests/limits, what the agent allocated, status, age, message.
      Without POD: every pod of the namespace with a resizelet request; -A: of every namespace.

  agent [flags]
      Run the node agent (what the DaemonSet runs); see "resizelet agent --help".

flags for resize and status:
  -n, --namespace NS     default: the current context's namespace, else "default"
      --kubeconfig PATH  default: $KUBECONFIG, else ~/.kube/config, else the in-cluster service account
      --context NAME     a context of the kubeconfig other than the current one
  -h, --help

exit status: 0 done; 1 error, refused or Rejected; 2 --wait timed out.
`;
