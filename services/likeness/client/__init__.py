"""Client-side code: the `likeness` CLI, the jobs client, the local process stack, the demo and its
fixture set. Nothing here is deployed inside a service; services never import this package."""
