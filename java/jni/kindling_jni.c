/* JNI binding of libkindling for the JVM API (java/src/org/kindling/spark/NativeNet.java).
 *
 * Only the public API (include/kindling.h): a network rebuilt from a
 * checkpoint file, its description, and its forward pass. Every failure
 * becomes a Java exception (org.kindling.spark.KindlingException) carrying
 * the kd_status name and kd_last_error()'s message; nothing here aborts or
 * prints. A handle is the kd_net pointer as a jlong, owned by one NativeNet,
 * which frees it exactly once (close() or its Cleaner). */
#include <jni.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kindling.h"

#include "org_kindling_spark_NativeNet.h"

static void throw_kd(JNIEnv *env, kd_status s, const char *what) {
    jclass cls = (*env)->FindClass(env, "org/kindling/spark/KindlingException");
    if (cls == NULL) return; /* NoClassDefFoundError is pending */
    jmethodID ctor = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;Ljava/lang/String;)V");
    if (ctor == NULL) return;
    const char *msg = kd_last_error();
    char buf[4096];
    if (msg[0])
        snprintf(buf, sizeof buf, "%s: %s", what, msg);
    else
        snprintf(buf, sizeof buf, "%s failed (%s)", what, kd_status_name(s));
    jstring jname = (*env)->NewStringUTF(env, kd_status_name(s));
    jstring jmsg = (*env)->NewStringUTF(env, buf);
    if (jname == NULL || jmsg == NULL) return;
    jobject ex = (*env)->NewObject(env, cls, ctor, (jint)s, jname, jmsg);
    if (ex != NULL) (*env)->Throw(env, (jthrowable)ex);
}

static void throw_java(JNIEnv *env, const char *cls_name, const char *msg) {
    jclass cls = (*env)->FindClass(env, cls_name);
    if (cls != NULL) (*env)->ThrowNew(env, cls, msg);
}

static kd_net *net_of(JNIEnv *env, jlong handle) {
    if (handle == 0) {
        throw_java(env, "java/lang/IllegalStateException", "this KindlingModel's native network was closed");
        return NULL;
    }
    return (kd_net *)(intptr_t)handle;
}

JNIEXPORT jstring JNICALL Java_org_kindling_spark_NativeNet_version(JNIEnv *env, jclass cls) {
    return (*env)->NewStringUTF(env, kd_version());
}

JNIEXPORT void JNICALL Java_org_kindling_spark_NativeNet_setThreads(JNIEnv *env, jclass cls, jint n) {
    kd_set_threads((int)n);
}

/* Loads the checkpoint at path; history receives the epoch records as
 * doubles, 9 per epoch in the struct's order (epoch, train_loss,
 * train_accuracy, test_loss, test_accuracy, seconds, learning_rate,
 * val_loss, val_accuracy), NaN where not measured. */
JNIEXPORT jlong JNICALL Java_org_kindling_spark_NativeNet_load(JNIEnv *env, jclass cls, jstring jpath,
                                                               jobjectArray history_out) {
    if (jpath == NULL) {
        throw_java(env, "java/lang/NullPointerException", "checkpoint path is null");
        return 0;
    }
    const char *path = (*env)->GetStringUTFChars(env, jpath, NULL);
    if (path == NULL) return 0;
    kd_net *net = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    kd_status s = kd_checkpoint_load(path, &net, NULL, &st);
    (*env)->ReleaseStringUTFChars(env, jpath, path);
    if (s != KD_OK) {
        kd_train_state_clear(&st);
        throw_kd(env, s, "loading the checkpoint");
        return 0;
    }
    if (history_out != NULL && (*env)->GetArrayLength(env, history_out) >= 1) {
        jsize n = (jsize)st.history_len * 9;
        jdoubleArray arr = (*env)->NewDoubleArray(env, n);
        if (arr == NULL) {
            kd_train_state_clear(&st);
            kd_net_free(net);
            return 0;
        }
        double *tmp = malloc(sizeof(double) * (size_t)(n ? n : 1));
        if (tmp == NULL) {
            kd_train_state_clear(&st);
            kd_net_free(net);
            throw_java(env, "java/lang/OutOfMemoryError", "kindling: history of the checkpoint");
            return 0;
        }
        for (int i = 0; i < st.history_len; i++) {
            const kd_epoch_record *r = &st.history[i];
            double *o = tmp + (size_t)i * 9;
            o[0] = r->epoch;
            o[1] = r->train_loss;
            o[2] = r->train_accuracy;
            o[3] = r->test_loss;
            o[4] = r->test_accuracy;
            o[5] = r->seconds;
            o[6] = r->learning_rate;
            o[7] = r->val_loss;
            o[8] = r->val_accuracy;
        }
        (*env)->SetDoubleArrayRegion(env, arr, 0, n, tmp);
        free(tmp);
        (*env)->SetObjectArrayElement(env, history_out, 0, arr);
    }
    kd_train_state_clear(&st);
    return (jlong)(intptr_t)net;
}

JNIEXPORT void JNICALL Java_org_kindling_spark_NativeNet_free(JNIEnv *env, jclass cls, jlong handle) {
    kd_net_free((kd_net *)(intptr_t)handle);
}

JNIEXPORT jstring JNICALL Java_org_kindling_spark_NativeNet_specJson(JNIEnv *env, jclass cls, jlong handle) {
    kd_net *net = net_of(env, handle);
    return net ? (*env)->NewStringUTF(env, kd_net_spec_json(net)) : NULL;
}

JNIEXPORT jintArray JNICALL Java_org_kindling_spark_NativeNet_inputShape(JNIEnv *env, jclass cls, jlong handle) {
    kd_net *net = net_of(env, handle);
    if (net == NULL) return NULL;
    kd_shape s = kd_net_input_shape(net);
    jint dims[KD_MAX_RANK];
    for (int i = 0; i < s.rank && i < KD_MAX_RANK; i++) dims[i] = s.dim[i];
    jintArray arr = (*env)->NewIntArray(env, s.rank);
    if (arr != NULL) (*env)->SetIntArrayRegion(env, arr, 0, s.rank, dims);
    return arr;
}

JNIEXPORT jint JNICALL Java_org_kindling_spark_NativeNet_numClasses(JNIEnv *env, jclass cls, jlong handle) {
    kd_net *net = net_of(env, handle);
    return net ? kd_net_num_classes(net) : 0;
}

/* n samples of x (n * input size floats, row-major) into probs (n * classes).
 * The sizes are checked here too, so a wrong call is an exception, never a
 * read past an array. */
JNIEXPORT void JNICALL Java_org_kindling_spark_NativeNet_predict(JNIEnv *env, jclass cls, jlong handle,
                                                                 jfloatArray jx, jint n, jint batch,
                                                                 jfloatArray jprobs) {
    kd_net *net = net_of(env, handle);
    if (net == NULL) return;
    if (jx == NULL || jprobs == NULL || n < 0) {
        throw_java(env, "java/lang/IllegalArgumentException", "kindling predict: null arrays or negative count");
        return;
    }
    kd_shape shape = kd_net_input_shape(net);
    size_t in = kd_shape_size(&shape), classes = (size_t)kd_net_num_classes(net);
    if ((size_t)(*env)->GetArrayLength(env, jx) < (size_t)n * in ||
        (size_t)(*env)->GetArrayLength(env, jprobs) < (size_t)n * classes) {
        throw_java(env, "java/lang/IllegalArgumentException", "kindling predict: arrays shorter than n samples");
        return;
    }
    if (n == 0) return;
    /* Copies, not critical sections: the forward pass is long and may
     * allocate, and a critical section would block the garbage collector. */
    jfloat *x = (*env)->GetFloatArrayElements(env, jx, NULL);
    if (x == NULL) return;
    float *probs = malloc(sizeof(float) * (size_t)n * classes);
    if (probs == NULL) {
        (*env)->ReleaseFloatArrayElements(env, jx, x, JNI_ABORT);
        throw_java(env, "java/lang/OutOfMemoryError", "kindling predict: output buffer");
        return;
    }
    kd_status s = kd_net_predict_batched(net, x, (int64_t)n, batch > 0 ? (int)batch : 256, probs);
    (*env)->ReleaseFloatArrayElements(env, jx, x, JNI_ABORT);
    if (s != KD_OK) {
        free(probs);
        throw_kd(env, s, "predict");
        return;
    }
    (*env)->SetFloatArrayRegion(env, jprobs, 0, (jsize)((size_t)n * classes), probs);
    free(probs);
}
