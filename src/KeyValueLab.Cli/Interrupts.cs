using System.Runtime.InteropServices;

namespace KeyValueLab.Cli;

/// <summary>Ctrl-C (SIGINT) and SIGTERM as a cancellation: long commands stop at their next check and exit 130.</summary>
internal static class Interrupts
{
    /// <summary>
    /// Cancels <paramref name="cancel"/> on the first SIGINT or SIGTERM instead of killing the process; a second signal,
    /// once cancellation is under way, ends the process as usual. Dispose to restore the default handling.
    /// </summary>
    public static IDisposable CancelOnSignal(CancellationTokenSource cancel)
    {
        void Handle(PosixSignalContext context)
        {
            if (cancel.IsCancellationRequested) return;  // the second signal: default handling
            context.Cancel = true;
            cancel.Cancel();
        }
        return new Registrations(PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle));
    }

    private sealed class Registrations(params PosixSignalRegistration[] registrations) : IDisposable
    {
        public void Dispose()
        {
            foreach (var r in registrations) r.Dispose();
        }
    }
}
