package io.github.bigmodel.pipeline;

/**
 * A pipeline could not do what was asked. {@link Kind} says why: a stage is gone or did not answer in time
 * ({@link Kind#UNAVAILABLE}, the request failed as a whole and the group must be formed again), a stage failed the
 * step ({@link Kind#STAGE_FAILED}, the group stays usable), or a rank was refused when the group formed
 * ({@link Kind#REFUSED}: wrong world size, another checkpoint, another version).
 *
 * <pre>{@code
 * try {
 *     chat.chat(messages);
 * } catch (PipelineException e) {
 *     if (e.kind() == PipelineException.Kind.UNAVAILABLE) coordinator.reform();
 * }
 * }</pre>
 */
public class PipelineException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    /** Why a pipeline operation failed. */
    public enum Kind {
        /** A stage died, hung or cannot be reached: nothing was answered; form the group again. */
        UNAVAILABLE,
        /** A stage raised an error running the step (bad input, a closed model); the group is still usable. */
        STAGE_FAILED,
        /** A rank was refused when the group formed. */
        REFUSED
    }

    private final Kind kind;

    public PipelineException(Kind kind, String message) {
        super(message);
        this.kind = kind;
    }

    public PipelineException(Kind kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    public Kind kind() {
        return kind;
    }
}
